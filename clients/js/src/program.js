// Programs and threads: friendly options turned into wire `CallRequest`s.

import { CallFailed } from "./errors.js";
import { PROTOCOL_VERSION } from "./wire.js";

/** What Program and Thread share: building requests from friendly options. */
export class Caller {
  request(opts) {
    if (!this.programId) throw new Error("program is not open (await program.open())");
    const sampling = { ...(opts.sampling ?? {}) };
    if (opts.maxTokens !== undefined) sampling.max_tokens = opts.maxTokens;
    if (opts.temperature !== undefined) sampling.temperature = opts.temperature;
    const req = {
      program_id: this.programId,
      thread_id: opts.thread ?? this.threadId,
      parent_ids: (opts.parents ?? []).map((p) => (typeof p === "string" ? p : p.callId)),
      sampling,
    };
    if (opts.prompt !== undefined) req.prompt = opts.prompt;
    if (opts.messages !== undefined) req.messages = opts.messages;
    if (opts.promptTokenIds !== undefined) req.prompt_token_ids = opts.promptTokenIds;
    if (opts.clientCallId !== undefined) req.client_call_id = opts.clientCallId;
    if (opts.metadata !== undefined) req.metadata = opts.metadata;
    return req;
  }

  /** One LLM call: `{prompt | messages | promptTokenIds, maxTokens, temperature, parents, ...}`. */
  call(opts) {
    return this.client.call(this.request(opts), { timeoutMs: opts.timeoutMs });
  }

  /** One LLM call, streamed: yields deltas, then the result. */
  stream(opts) {
    return this.client.submit(this.request(opts), { timeoutMs: opts.timeoutMs });
  }
}

/** One thread of a program: parallel branches use different threads. */
export class Thread extends Caller {
  constructor(program, threadId) {
    super();
    this.program = program;
    this.client = program.client;
    this.threadId = threadId;
  }

  get programId() {
    return this.program.programId;
  }
}

/** One agent program (the paper's session). */
export class Program extends Caller {
  constructor(client, programId, metadata) {
    super();
    this.client = client;
    this.programId = programId;
    this.metadata = metadata;
    this.threadId = "main";
    this.closed = null;
  }

  async open() {
    const body = { v: PROTOCOL_VERSION, metadata: this.metadata };
    if (this.programId) body.program_id = this.programId;
    const reply = await this.client.programRequest(this.client.subjects.programOpen, body);
    if (reply.status !== "open") {
      throw new CallFailed({ code: "program_closed", message: `program ${reply.program_id} is closed` });
    }
    this.programId = reply.program_id;
    return reply;
  }

  /**
   * Close the program; resolves to its final statistics (`{program_id, status, stats}`).
   * With `cancel`, its unfinished calls are cancelled too (without, they run to their end).
   */
  async close({ cancel = false } = {}) {
    this.closed = await this.client.programRequest(this.client.subjects.programClose, {
      v: PROTOCOL_VERSION,
      program_id: this.programId,
      cancel,
    });
    return this.closed;
  }

  /**
   * Cancel every unfinished call of the program, on every engine: each rejects with
   * `CallFailed` code `cancelled`. Resolves to `{program_id, cancelled: [call ids], status}`;
   * `close` closes the program first (no new calls).
   */
  async cancel({ reason = "", close = false } = {}) {
    return this.client.programRequest(this.client.subjects.programCancel, {
      v: PROTOCOL_VERSION,
      program_id: this.programId,
      reason,
      close,
    });
  }

  thread(name) {
    return new Thread(this, name);
  }
}
