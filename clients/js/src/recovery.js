// How a call gets through a lost message: idempotent resends and resumes.
//
// Two things can go missing between a client and the stack, each with its own remedy:
//
// * Before `accepted` (no frontend up, a frontend that died holding the request, a NATS server
//   restarting): the request is sent again. Every request carries a `client_call_id` (made up
//   here when the caller gave none) and the frontend accepts one call per program and client
//   call id, so a resend never runs the call twice. Past the accept timeout: an explicit error.
// * After it (deltas or the final published while NATS was down, or before the inbox was
//   subscribed again): a `CallResume` asks the frontend, which answers from Postgres with the
//   stored tokens from the client's offset and, once the call has ended, its answer. Asked when
//   the connection reconnected, when a delta arrives past a gap, and after a silence.
//
// `CallTimers` says when the next of these is due.

import { randomBytes } from "node:crypto";

import { CallFailed } from "./errors.js";

/** `request` with a client call id (a new random one when it had none), and whether it is new. */
export function withClientCallId(request) {
  if (request.client_call_id != null) return [request, false];
  return [{ ...request, client_call_id: `auto-${randomBytes(12).toString("hex")}` }, true];
}

/** The wire `CallResume` for where `stream` stands: by call id once accepted. */
export function resumeRequest(stream) {
  const key = stream.callId !== null ? { call_id: stream.callId } : { client_call_id: stream.request.client_call_id };
  return { v: 1, program_id: stream.request.program_id, ...key, offset: stream.tokens.length };
}

/**
 * The caller deltas a resume reply brings (stored tokens, then any held deltas they release) and
 * the call's ending if it has one (`{final}` or `{error}`). An ended call's reply carries every
 * stored token from the offset, so its final is complete whatever was lost.
 */
export function foldResume(stream, reply) {
  const callId = reply.call_id ?? stream.callId;
  const fresh = reply.token_ids?.length
    ? stream.deltas({ call_id: callId, offset: reply.offset, token_ids: reply.token_ids })
    : [];
  return { fresh, final: reply.final ?? null, error: reply.error ?? null };
}

/** The explicit error for a call no frontend accepted within the accept timeout. */
export function notAccepted(stream, waitedMs) {
  const key = stream.request.client_call_id;
  return new CallFailed({
    code: "timeout",
    message:
      `no frontend accepted the call within ${waitedMs} ms (it may still have been accepted: ` +
      `resubmit with clientCallId "${key}" to get its answer without running it twice)`,
    retryable: true,
  });
}

/** When the call's next resend (before acceptance) or resume (after it) is due, in Date.now() ms. */
export class CallTimers {
  constructor(now, acceptTimeoutMs, silenceMs) {
    this.acceptBy = now + acceptTimeoutMs;
    this.silenceMs = silenceMs;
    this.nextAt = now + 1000;
    this.resendMs = 1000; // wait for an answer to a resend; doubles up to 4 s
    this.retryMs = 250; // after a failed resume or a "no responders"; doubles up to 2 s
  }

  /** A (re)submit went out: resend if nothing answers it in time. */
  sent(now) {
    this.nextAt = Math.min(now + this.resendMs, this.acceptBy);
    this.resendMs = Math.min(this.resendMs * 2, 4000);
  }

  /** A message for the accepted call arrived: it is alive; the silence clock restarts. */
  heard(now) {
    this.nextAt = now + this.silenceMs;
    this.retryMs = 250;
  }

  /** A resend bounced or a resume got no answer: try again shortly. */
  retrySoon(now) {
    this.nextAt = now + this.retryMs;
    this.retryMs = Math.min(this.retryMs * 2, 2000);
  }

  nowDue(now) {
    this.nextAt = now;
  }
}
