// The errors a call rejects with: every failure the protocol reports is a `CallFailed` with the
// wire `CallError` attached, so callers branch on `.code` and `.retryable`, not on messages.

/** A call (or program request) answered with a protocol `CallError`. */
export class CallFailed extends Error {
  constructor(error) {
    super(`${error.code}: ${error.message}`);
    this.name = "CallFailed";
    this.error = error;
    this.code = error.code;
    this.retryable = Boolean(error.retryable);
    this.callId = error.call_id ?? null;
  }
}

/** No final answer within the call's timeout (the call may still finish server-side). */
export class CallTimeout extends CallFailed {
  constructor(callId, ms) {
    super({ code: "timeout", message: `no final answer within ${ms} ms`, retryable: true, call_id: callId });
    this.name = "CallTimeout";
  }
}

/** No frontend subscribed to `subject` (NATS answered "no responders"). */
export function unavailable(subject) {
  return new CallFailed({
    code: "internal",
    message: `no Autellix frontend is listening on ${subject} (is the stack up?)`,
    retryable: true,
  });
}
