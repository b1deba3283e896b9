// The Node.js client against a live Autellix stack (frontend, scheduler, simulated engine).
// Run by tests/stack/test_js_client.py, which starts the stack and sets AUTELLIX_NATS_URL and
// AUTELLIX_NAMESPACE; by hand: `AUTELLIX_NATS_URL=... AUTELLIX_NAMESPACE=... npm test`.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { AutellixClient, CallFailed } from "../src/index.js";

let client;

before(async () => {
  assert.ok(process.env.AUTELLIX_NATS_URL, "set AUTELLIX_NATS_URL to a running stack's NATS");
  client = await AutellixClient.connect({ timeoutMs: 60_000 });
});

after(async () => {
  await client?.close();
});

test("a program with sequential and parallel calls, then close with statistics", async () => {
  const program = await client.openProgram({ metadata: { lang: "js" } });
  assert.match(program.programId, /^p-/);
  const plan = await program.call({ prompt: "Plan the trip", maxTokens: 6 });
  assert.equal(plan.tokenIds.length, 6);
  assert.equal(plan.usage.completion_tokens, 6);
  assert.equal(plan.finishReason, "length");
  assert.equal(plan.engine.backend, "sim"); // the simulated engine says so
  assert.ok(plan.text && plan.text.trim().split(/\s+/).length === 6);

  const branches = await Promise.all(
    ["a", "b", "c"].map((t, i) =>
      program.thread(t).call({ prompt: `branch ${t}`, maxTokens: 3 + i, parents: [plan] }),
    ),
  );
  assert.deepEqual(branches.map((b) => b.threadId), ["a", "b", "c"]);
  assert.deepEqual(branches.map((b) => b.tokenIds.length), [3, 4, 5]);
  const join = await program.call({
    messages: [{ role: "user", content: "join the branches" }],
    maxTokens: 2,
    parents: branches,
  });
  assert.equal(join.tokenIds.length, 2);

  const closed = await program.close();
  assert.equal(closed.status, "closed");
  assert.equal(closed.stats.calls, 5);
  assert.equal(closed.stats.completion_tokens, 6 + 3 + 4 + 5 + 2);
});

test("streaming tokens arrive in order, then the result", async () => {
  const program = await client.openProgram();
  const items = [];
  for await (const item of program.stream({ prompt: "tell me a long story", maxTokens: 50 })) {
    items.push(item);
  }
  const result = items.pop();
  assert.equal(result.type, "result");
  assert.ok(items.length > 1, "several deltas");
  let offset = 0;
  for (const d of items) {
    assert.equal(d.type, "delta");
    assert.equal(d.offset, offset);
    offset += d.tokenIds.length;
  }
  assert.deepEqual(items.flatMap((d) => d.tokenIds), result.tokenIds);
  assert.equal(items.map((d) => d.text).join(""), result.text);
  assert.ok(result.firstTokenMs !== null && result.firstTokenMs <= result.latencyMs);
  await program.close();
});

test("an idempotency key never runs a call twice", async () => {
  const program = await client.openProgram();
  const first = await program.call({ prompt: "once", maxTokens: 4, clientCallId: "step-1" });
  const again = await program.call({ prompt: "once", maxTokens: 4, clientCallId: "step-1" });
  assert.equal(again.callId, first.callId);
  assert.equal(again.duplicate, true);
  assert.deepEqual(again.tokenIds, first.tokenIds);
  await program.close();
});

test("bad input and closed programs are typed errors", async () => {
  const program = await client.openProgram();
  await assert.rejects(program.call({ maxTokens: 3 }), (err) => {
    assert.ok(err instanceof CallFailed);
    assert.equal(err.code, "validation_error");
    assert.match(err.message, /exactly one of prompt, messages, prompt_token_ids/);
    return true;
  });
  await assert.rejects(program.call({ prompt: "x", maxTokens: 0 }), { code: "validation_error" });
  await program.close();
  await assert.rejects(program.call({ prompt: "after close" }), { code: "program_closed" });
});

test("cancelling a program rejects its running calls with cancelled", async () => {
  const program = await client.openProgram();
  const running = [1, 2].map(() => program.call({ prompt: "long", maxTokens: 20_000 }));
  // attach the checks now: each call rejects as soon as the cancel lands
  const rejected = running.map((call) => assert.rejects(call, { code: "cancelled" }));
  await new Promise((resolve) => setTimeout(resolve, 500));
  const reply = await program.cancel({ reason: "done", close: true });
  assert.equal(reply.type, "program_cancel");
  assert.equal(reply.status, "closed");
  assert.equal(reply.cancelled.length, 2);
  await Promise.all(rejected);
  await assert.rejects(program.call({ prompt: "after cancel" }), { code: "program_closed" });
});

test("a resume after a dropped subscription returns the missing tokens and the final", async () => {
  const program = await client.openProgram();
  const { createInbox } = await import("nats");
  const inbox = createInbox();
  const sub = client.nc.subscribe(inbox);
  const request = { v: 1, program_id: program.programId, thread_id: "main", prompt: "drop me", sampling: { max_tokens: 40 } };
  client.nc.publish(client.subjects.submit, new TextEncoder().encode(JSON.stringify(request)), { reply: inbox });
  let callId = null;
  const have = [];
  for await (const msg of sub) {
    const reply = JSON.parse(new TextDecoder().decode(msg.data));
    if (reply.type === "accepted") callId = reply.call_id;
    if (reply.type === "delta") have.push(...reply.token_ids);
    if (have.length >= 3) break; // the subscription is dropped here: the rest goes nowhere
  }
  assert.ok(sub.isClosed() && callId);
  let reply;
  for (let i = 0; i < 100; i++) {
    reply = await client.resume({ programId: program.programId, callId, offset: have.length });
    if (reply.status === "finished") break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  assert.equal(reply.status, "finished");
  assert.equal(reply.offset, have.length);
  assert.equal(have.length + reply.token_ids.length, 40, "the stored tokens from the offset on");
  assert.equal(reply.final.call_id, callId);
  assert.equal(reply.final.usage.completion_tokens, 40);
  const other = await client.resume({ programId: "p-not-this-one", callId, offset: 0 });
  assert.equal(other.status, "unknown", "a call id is looked up within its program only");
  await program.close();
});

test("no frontend: the call is resent until the accept timeout, then an explicit error", async () => {
  const lonely = new AutellixClient(client.nc, { namespace: `nobody-${Date.now()}`, acceptTimeoutMs: 1200 });
  const started = Date.now();
  await assert.rejects(lonely.call({ program_id: "p-x", prompt: "hello?" }), (err) => {
    assert.ok(err instanceof CallFailed);
    assert.match(err.message, /no Autellix frontend is listening/);
    return true;
  });
  assert.ok(Date.now() - started >= 1200, "not given up at the first no-responders");
  assert.ok(lonely.recovered.resent >= 1, JSON.stringify(lonely.recovered));
});
