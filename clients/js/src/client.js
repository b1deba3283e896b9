// `AutellixClient`: one NATS connection, any number of programs and concurrent calls.
//
// A call is a `CallRequest` published to `<ns>.v1.call.submit` with a private inbox as reply
// subject; the inbox then receives `accepted` (or `error`), zero or more `delta`s and one
// `final` (or `error`). Core NATS keeps nothing, so a lost message is recovered here
// (`recovery.js`): a request no frontend accepted is resent under its client call id until the
// accept timeout, and an accepted call whose replies may have been lost (the connection
// reconnected, a gap in the deltas, a silence) is resumed from Postgres by a `CallResume`. The
// caller sees every token once and one result.

import { connect, createInbox } from "nats";
import { readFileSync } from "node:fs";

import { CallFailed, CallTimeout, unavailable } from "./errors.js";
import { Program } from "./program.js";
import { CallTimers, foldResume, notAccepted, resumeRequest, withClientCallId } from "./recovery.js";
import { RECONNECTED, ReplyQueue, TIMED_OUT } from "./reply-queue.js";
import { CallStream } from "./stream.js";
import { PROTOCOL_VERSION, decode, encode, noResponders, subjects } from "./wire.js";

const RESUME_WAIT_MS = 2000; // one resume round trip; a lost one is retried, not waited for

/**
 * Connection options for a NATS user file: the server allows a client user to receive only
 * under its own inbox prefix, so the prefix travels with the password.
 */
function userOptions(path) {
  if (!path) return {};
  const u = JSON.parse(readFileSync(path, "utf8"));
  return { user: u.user, pass: u.password, inboxPrefix: u.inbox_prefix ?? `_INBOX.${u.user}` };
}

export class AutellixClient {
  /**
   * @param {object} [opts]
   * @param {string|string[]} [opts.servers] NATS URL(s); default $AUTELLIX_NATS_URL or localhost
   * @param {string} [opts.namespace] subject namespace; default $AUTELLIX_NAMESPACE or "autellix"
   * @param {number} [opts.timeoutMs] a call's whole life, submit to final (default 300 s)
   * @param {number} [opts.acceptTimeoutMs] how long a call is resent (idempotently) until a
   *   frontend accepts it, before an explicit error (default 5 s)
   * @param {number} [opts.silenceMs] an accepted call with no message for this long is resumed
   *   from Postgres (default 5 s)
   * @param {number} [opts.requestTimeoutMs] program open/close deadline (default 10 s)
   * @param {string} [opts.userFile] NATS user file ({"user", "password", "inbox_prefix"}, what
   *   `autellix up` writes for clients); default $AUTELLIX_NATS_USER_FILE, none: no credentials
   */
  static async connect(opts = {}) {
    const servers = opts.servers ?? process.env.AUTELLIX_NATS_URL ?? "nats://127.0.0.1:4222";
    const auth = userOptions(opts.userFile ?? process.env.AUTELLIX_NATS_USER_FILE);
    const nc = await connect({
      servers,
      name: "autellix-js-client",
      maxReconnectAttempts: -1,
      reconnectTimeWait: 250,
      ...auth,
    });
    return new AutellixClient(nc, { inboxPrefix: auth.inboxPrefix, ...opts });
  }

  constructor(nc, opts = {}) {
    this.nc = nc;
    this.namespace = opts.namespace ?? process.env.AUTELLIX_NAMESPACE ?? "autellix";
    this.subjects = subjects(this.namespace);
    this.timeoutMs = opts.timeoutMs ?? 300_000;
    this.acceptTimeoutMs = opts.acceptTimeoutMs ?? 5_000;
    this.silenceMs = opts.silenceMs ?? 5_000;
    this.requestTimeoutMs = opts.requestTimeoutMs ?? 10_000;
    /** Reply subjects start with this (a NATS user may only receive under its own prefix). */
    this.inboxPrefix = opts.inboxPrefix ?? "";
    /** Recoveries attempted: calls resent before acceptance, resume requests sent. */
    this.recovered = { resent: 0, resumed: 0 };
    this.open = new Set(); // the reply queues of open calls
    this.watchStatus().catch(() => {}); // ends when the connection closes
  }

  /** Replies published while the connection was down are gone: every open call resumes. */
  async watchStatus() {
    for await (const status of this.nc.status()) {
      if (status.type === "reconnect") for (const queue of this.open) queue.push(RECONNECTED);
    }
  }

  /** A program handle (not opened yet: call `open()`, or use `openProgram`). */
  program({ programId = null, metadata = {} } = {}) {
    return new Program(this, programId, metadata);
  }

  /** Open a program (session); its calls are scheduled together (PLAS/ATLAS). */
  async openProgram(opts = {}) {
    const program = this.program(opts);
    await program.open();
    return program;
  }

  async programRequest(subject, body) {
    let msg;
    try {
      msg = await this.nc.request(subject, encode(body), { timeout: this.requestTimeoutMs });
    } catch (err) {
      if (err && err.code === "503") throw unavailable(subject);
      throw err;
    }
    const reply = decode(msg);
    if (reply === null) throw unavailable(subject);
    if (reply.type === "error") throw new CallFailed(reply);
    return reply;
  }

  /**
   * Where a call stands, read from Postgres: `{programId, callId | clientCallId, offset}` gives
   * the wire `CallResumeReply` (`status`, the stored `token_ids` from `offset`, and `final` or
   * `error` once the call has ended). Read-only, so safe to repeat.
   */
  async resume({ programId, callId, clientCallId, offset = 0 }) {
    const key = callId != null ? { call_id: callId } : { client_call_id: clientCallId };
    return this.programRequest(this.subjects.resume, {
      v: PROTOCOL_VERSION,
      program_id: programId,
      ...key,
      offset,
    });
  }

  /**
   * Submit one `CallRequest` (wire format, snake_case). Yields de-duplicated deltas
   * `{type: "delta", callId, offset, tokenIds, text}`, then `{type: "result", ...}`; throws
   * `CallFailed` on an error reply. Lost messages are recovered (see the top of this file).
   */
  async *submit(request, { timeoutMs } = {}) {
    const limit = timeoutMs ?? this.timeoutMs;
    const [req, ownKey] = withClientCallId({ v: PROTOCOL_VERSION, ...request });
    const start = Date.now();
    const deadline = start + limit;
    const stream = new CallStream(req, start, ownKey);
    const timers = new CallTimers(start, this.acceptTimeoutMs, this.silenceMs);
    const inbox = createInbox(this.inboxPrefix);
    const queue = new ReplyQueue();
    const sub = this.nc.subscribe(inbox, { callback: (err, msg) => queue.push(err ?? msg) });
    this.open.add(queue);
    let bounced = false; // the last answer was "no responders": no frontend is up
    const send = () => {
      // (an app that traces adds a W3C `traceparent` header here; without one the services
      // put every call of the program in one trace derived from the program id)
      this.nc.publish(this.subjects.submit, encode(req), { reply: inbox });
      timers.sent(Date.now());
    };
    try {
      send();
      for (;;) {
        let now = Date.now();
        if (now >= deadline) throw new CallTimeout(stream.callId, limit);
        let msg = await queue.next(Math.min(timers.nextAt, deadline) - now);
        if (msg === TIMED_OUT) {
          if (Date.now() < timers.nextAt) continue; // the deadline: checked above
          msg = RECONNECTED; // due: recover as after a reconnect
        }
        if (msg instanceof Error) throw msg;
        if (msg === RECONNECTED) {
          if (!stream.acceptedYet) {
            if (Date.now() >= timers.acceptBy) {
              throw bounced ? unavailable(this.subjects.submit) : notAccepted(stream, this.acceptTimeoutMs);
            }
            send();
            this.recovered.resent += 1;
            continue;
          }
          let ended = false;
          for await (const item of this.resumeStream(stream, timers)) {
            yield item;
            ended = item.type === "result";
          }
          if (ended) return;
          continue;
        }
        if (noResponders(msg)) {
          if (stream.acceptedYet) continue; // a stray bounce of a resend: the call is in
          now = Date.now();
          bounced = true;
          if (now >= timers.acceptBy) throw unavailable(this.subjects.submit);
          timers.retrySoon(now);
          timers.nextAt = Math.min(timers.nextAt, timers.acceptBy);
          continue;
        }
        const reply = decode(msg);
        bounced = false;
        if (stream.acceptedYet || reply.type === "accepted") timers.heard(Date.now());
        if (reply.type === "accepted") {
          stream.accepted(reply);
        } else if (reply.type === "delta") {
          yield* stream.deltas(reply);
          if (stream.gap) timers.nowDue(Date.now());
        } else if (reply.type === "final") {
          yield* stream.tail(reply);
          if (stream.missing(reply)) yield* this.complete(stream, reply, deadline);
          yield stream.result(reply);
          return;
        } else if (reply.type === "error") {
          now = Date.now();
          if (
            !stream.acceptedYet &&
            reply.code === "unavailable" &&
            now + timers.retryMs < timers.acceptBy
          ) {
            timers.retrySoon(now); // the frontend's Postgres is restarting: resend
            continue;
          }
          throw new CallFailed(reply);
        }
      }
    } finally {
      this.open.delete(queue);
      if (!sub.isClosed()) sub.unsubscribe();
    }
  }

  /** One `CallResume` round trip; null when nobody answered (no frontend, or NATS is down). */
  async askResume(stream) {
    this.recovered.resumed += 1;
    let msg;
    try {
      msg = await this.nc.request(this.subjects.resume, encode(resumeRequest(stream)), {
        timeout: Math.min(this.requestTimeoutMs, RESUME_WAIT_MS),
      });
    } catch {
      return null; // no responders, no answer in time, or the connection is down
    }
    const reply = decode(msg);
    if (reply === null) return null;
    if (reply.type === "error") throw new CallFailed(reply);
    return reply;
  }

  /**
   * Resume an accepted call: yield the tokens it missed and, if the call has ended, its result
   * last (an error throws). Nothing answered: tried again shortly.
   */
  async *resumeStream(stream, timers) {
    const reply = await this.askResume(stream);
    const now = Date.now();
    if (reply === null) {
      timers.retrySoon(now);
      return;
    }
    timers.heard(now);
    const { fresh, final, error } = foldResume(stream, reply);
    yield* fresh;
    if (error) throw new CallFailed(error);
    if (final) yield stream.result(final);
    else if (stream.gap) timers.retrySoon(now); // its saved tokens not yet up to the held deltas
  }

  /**
   * A final arrived but deltas before it were lost: read the rest from Postgres (the engine
   * stored every token before it sent the final).
   */
  async *complete(stream, final, deadline) {
    let delay = 250;
    while (stream.missing(final)) {
      const reply = await this.askResume(stream);
      if (reply !== null) {
        const { fresh } = foldResume(stream, reply);
        yield* fresh;
        if (!fresh.length && !reply.final) break; // nothing more stored
        continue;
      }
      if (Date.now() + delay > deadline) {
        throw new CallFailed({
          code: "internal",
          message: "the call ended but some streamed tokens were lost and no frontend answered a resume",
          retryable: true,
          call_id: stream.callId,
        });
      }
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 2000);
    }
  }

  /** Submit one `CallRequest` and wait for its result. */
  async call(request, opts = {}) {
    let result = null;
    for await (const item of this.submit(request, opts)) {
      if (item.type === "result") result = item;
    }
    return result;
  }

  async close() {
    await this.nc.drain();
  }
}
