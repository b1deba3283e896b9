// Autellix client for Node.js: agent programs, threads and streamed LLM calls over NATS.
//
// It speaks the wire protocol of docs/protocol.md (schemas in docs/asyncapi.yaml) with the
// npm `nats` package and nothing else: a call is a `CallRequest` published to
// `<ns>.v1.call.submit` with a private inbox as reply subject; the inbox then receives
// `accepted` (or `error`), zero or more `delta`s and one `final` (or `error`). Deltas carry the
// offset of their first token, so a delta replayed after an engine failover is dropped here and
// every token is seen once.
//
//   import { AutellixClient } from "@autellix/client";
//   const client = await AutellixClient.connect({ servers: "nats://127.0.0.1:4222" });
//   const program = await client.openProgram();
//   const plan = await program.call({ prompt: "Plan the trip", maxTokens: 64 });
//   const [a, b] = await Promise.all([
//     program.thread("a").call({ prompt: "Flights", parents: [plan] }),
//     program.thread("b").call({ prompt: "Hotels", parents: [plan] }),
//   ]);
//   for await (const item of program.stream({ prompt: "Summarize", parents: [a, b] })) {
//     if (item.type === "delta") process.stdout.write(item.text ?? "");
//   }
//   await program.close();
//   await client.close();

import { connect, createInbox } from "nats";

const PROTOCOL_VERSION = 1;

/** Every subject name, derived from one namespace (see `Subjects` in protocol.py). */
export function subjects(namespace = "autellix") {
  const root = `${namespace}.v${PROTOCOL_VERSION}`;
  return {
    submit: `${root}.call.submit`,
    programOpen: `${root}.program.open`,
    programClose: `${root}.program.close`,
  };
}

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

function unavailable(subject) {
  return new CallFailed({
    code: "internal",
    message: `no Autellix frontend is listening on ${subject} (is the stack up?)`,
    retryable: true,
  });
}

function decode(msg) {
  if (msg.headers && msg.headers.code === 503) return null; // no responders
  return JSON.parse(new TextDecoder().decode(msg.data));
}

function encode(obj) {
  return new TextEncoder().encode(JSON.stringify(obj));
}

/** One NATS connection; any number of programs and concurrent calls. */
export class AutellixClient {
  /**
   * @param {object} [opts]
   * @param {string|string[]} [opts.servers] NATS URL(s); default $AUTELLIX_NATS_URL or localhost
   * @param {string} [opts.namespace] subject namespace; default $AUTELLIX_NAMESPACE or "autellix"
   * @param {number} [opts.timeoutMs] a call's deadline (default 300 s)
   * @param {number} [opts.requestTimeoutMs] program open/close deadline (default 10 s)
   */
  static async connect(opts = {}) {
    const servers = opts.servers ?? process.env.AUTELLIX_NATS_URL ?? "nats://127.0.0.1:4222";
    const nc = await connect({ servers, name: "autellix-js-client", maxReconnectAttempts: -1 });
    return new AutellixClient(nc, opts);
  }

  constructor(nc, opts = {}) {
    this.nc = nc;
    this.namespace = opts.namespace ?? process.env.AUTELLIX_NAMESPACE ?? "autellix";
    this.subjects = subjects(this.namespace);
    this.timeoutMs = opts.timeoutMs ?? 300_000;
    this.requestTimeoutMs = opts.requestTimeoutMs ?? 10_000;
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
   * Submit one `CallRequest` (wire format, snake_case). Yields de-duplicated deltas
   * `{type: "delta", callId, offset, tokenIds, text}`, then `{type: "result", ...}`; throws
   * `CallFailed` on an error reply.
   */
  async *submit(request, { timeoutMs } = {}) {
    const limit = timeoutMs ?? this.timeoutMs;
    const inbox = createInbox();
    const sub = this.nc.subscribe(inbox);
    const started = Date.now();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      sub.unsubscribe();
    }, limit);
    let callId = null;
    let duplicate = false;
    const tokens = [];
    const texts = [];
    let firstTokenMs = null;
    try {
      // (an app that traces adds a W3C `traceparent` header here; without one the services
      // put every call of the program in one trace derived from the program id)
      this.nc.publish(this.subjects.submit, encode({ v: PROTOCOL_VERSION, ...request }), { reply: inbox });
      for await (const msg of sub) {
        const reply = decode(msg);
        if (reply === null) throw unavailable(this.subjects.submit);
        if (reply.type === "accepted") {
          callId = reply.call_id;
          duplicate = reply.duplicate;
        } else if (reply.type === "delta") {
          const end = reply.offset + reply.token_ids.length;
          if (end <= tokens.length) continue; // a replay of tokens we already have
          const skip = Math.max(0, tokens.length - reply.offset);
          while (tokens.length < reply.offset) tokens.push(-1); // a gap should not happen
          const fresh = reply.token_ids.slice(skip);
          tokens.push(...fresh);
          firstTokenMs ??= Date.now() - started;
          const text = skip === 0 ? (reply.text ?? null) : null;
          if (text !== null) texts.push(text);
          yield { type: "delta", callId: reply.call_id, offset: reply.offset + skip, tokenIds: fresh, text };
        } else if (reply.type === "final") {
          yield {
            type: "result",
            callId: reply.call_id,
            programId: reply.program_id,
            threadId: request.thread_id ?? "main",
            tokenIds: reply.token_ids ?? tokens,
            text: reply.text ?? (texts.length ? texts.join("") : null),
            finishReason: reply.finish_reason,
            usage: reply.usage,
            timing: reply.timing,
            engine: reply.engine,
            preemptions: reply.preemptions ?? 0,
            level: reply.level ?? 0,
            duplicate,
            latencyMs: Date.now() - started,
            firstTokenMs,
          };
          return;
        } else if (reply.type === "error") {
          throw new CallFailed(reply);
        }
      }
      if (timedOut) throw new CallTimeout(callId, limit);
      throw new CallFailed({ code: "internal", message: "reply stream ended early", retryable: true });
    } finally {
      clearTimeout(timer);
      if (!sub.isClosed()) sub.unsubscribe();
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

/** What Program and Thread share: building requests from friendly options. */
class Caller {
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

  /** Close the program; resolves to its final statistics (`{program_id, status, stats}`). */
  async close() {
    this.closed = await this.client.programRequest(this.client.subjects.programClose, {
      v: PROTOCOL_VERSION,
      program_id: this.programId,
    });
    return this.closed;
  }

  thread(name) {
    return new Thread(this, name);
  }
}
