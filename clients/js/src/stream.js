// Folding one call's replies into what its caller sees: new tokens once each, then the result.
//
// Deltas carry the offset of their first token because more than one source may answer for a
// call: a successor engine after a failover resends tokens the client has, and a resume
// (`CallResume`, answered from Postgres) returns stored tokens a late delta may repeat. Only
// the part past what was received is passed on. A delta that starts past what was received
// (the ones between were lost, e.g. published while NATS was down) is held back until a
// resume fills the gap, then released in order.

/** The state of one call's reply stream, from submit to its final answer. */
export class CallStream {
  /**
   * @param {object} request the wire `CallRequest`
   * @param {number} start Date.now() at submit: latencies are measured from it
   * @param {boolean} ownKey the client made up `request.client_call_id`: a `duplicate` accept
   *   is then its own resend, not the caller's repeat
   */
  constructor(request, start, ownKey) {
    this.request = request;
    this.start = start;
    this.ownKey = ownKey;
    this.callId = null;
    this.duplicate = false;
    this.tokens = [];
    this.texts = [];
    this.textWhole = true; // every token so far came with its text
    this.held = new Map(); // deltas past a gap, by offset
    this.firstTokenMs = null;
  }

  get acceptedYet() {
    return this.callId !== null;
  }

  /** Some deltas are held back behind missing tokens. */
  get gap() {
    return this.held.size > 0;
  }

  accepted(reply) {
    this.callId = reply.call_id;
    this.duplicate = Boolean(reply.duplicate) && !this.ownKey;
  }

  /**
   * The new tokens `reply` (a wire delta) brings, as caller deltas in order: several when it
   * closes a gap held deltas wait behind, none for a replay or a delta past a gap.
   */
  deltas(reply) {
    if (reply.offset > this.tokens.length) {
      this.held.set(reply.offset, reply);
      return [];
    }
    const out = [];
    const first = this.take(reply);
    if (first) out.push(first);
    for (;;) {
      const ready = [...this.held.keys()].filter((o) => o <= this.tokens.length).sort((a, b) => a - b);
      if (!ready.length) break;
      for (const offset of ready) {
        const held = this.held.get(offset);
        this.held.delete(offset);
        const next = this.take(held);
        if (next) out.push(next);
      }
    }
    return out;
  }

  take(reply) {
    const end = reply.offset + reply.token_ids.length;
    if (end <= this.tokens.length) return null;
    const skip = this.tokens.length - reply.offset;
    const fresh = reply.token_ids.slice(skip);
    this.tokens.push(...fresh);
    this.firstTokenMs ??= Date.now() - this.start;
    let text = null;
    if (skip === 0 && typeof reply.text === "string") {
      text = reply.text;
      this.texts.push(text);
    } else {
      this.textWhole = false; // its text cannot be split, or was never sent
    }
    return { type: "delta", callId: reply.call_id, offset: reply.offset + skip, tokenIds: fresh, text };
  }

  /** The final says more tokens were generated than this stream has, and lacks them itself. */
  missing(final) {
    return !final.token_ids && (final.usage?.completion_tokens ?? 0) > this.tokens.length;
  }

  /** The final's tokens past what was streamed (deltas lost on the way), as deltas. */
  tail(final) {
    if (!final.token_ids || final.token_ids.length <= this.tokens.length) return [];
    return this.deltas({ call_id: final.call_id, offset: 0, token_ids: final.token_ids });
  }

  /** The caller's result: the final's tokens and text, else those the deltas brought. */
  result(final) {
    const streamed = this.textWhole && this.texts.length ? this.texts.join("") : null;
    return {
      type: "result",
      callId: final.call_id,
      programId: final.program_id,
      threadId: this.request.thread_id ?? "main",
      tokenIds: final.token_ids ?? [...this.tokens],
      text: final.text ?? streamed,
      finishReason: final.finish_reason,
      usage: final.usage,
      timing: final.timing,
      engine: final.engine,
      preemptions: final.preemptions ?? 0,
      level: final.level ?? 0,
      duplicate: this.duplicate,
      latencyMs: Date.now() - this.start,
      firstTokenMs: this.firstTokenMs,
    };
  }
}
