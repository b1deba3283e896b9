// Streamed calls across a NATS server restart: each completes exactly once, every token once.
//
// Run by tests/stack/test_js_client.py against a stack on a private nats-server, with
// AUTELLIX_TEST_OUTAGE_FILE set: this test writes "streaming" there once every call has
// streamed, the Python side then SIGKILLs nats-server and starts it again on its port. Calls
// made while it is down are resent until accepted. The results go to `<that file>.json`, so
// the Python side can check Postgres holds one call per client call id with the same tokens.
// Skipped in a plain `npm test` (no outage is coming).

import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { test } from "node:test";

import { AutellixClient } from "../src/index.js";

const OUTAGE_FILE = process.env.AUTELLIX_TEST_OUTAGE_FILE;
const MAX_TOKENS = 120;

async function streamed(program, key, onFirstDelta) {
  const deltas = [];
  let result = null;
  for await (const item of program.stream({ prompt: `turn ${key}`, maxTokens: MAX_TOKENS, clientCallId: key })) {
    if (item.type === "delta") {
      if (!deltas.length) onFirstDelta();
      deltas.push(item);
    } else {
      result = item;
    }
  }
  return { key, deltas, result };
}

test("streamed calls survive a nats-server restart, each exactly once", { skip: !OUTAGE_FILE }, async () => {
  const client = await AutellixClient.connect({ timeoutMs: 60_000, acceptTimeoutMs: 15_000, silenceMs: 2_000 });
  try {
    const tag = `js-nrs-${Date.now().toString(36)}`;
    const programs = await Promise.all([0, 1, 2].map((i) => client.openProgram({ programId: `${tag}-${i}` })));
    const late = await client.openProgram({ programId: `${tag}-late` });
    let streaming = 0;
    let allStreaming;
    const ready = new Promise((resolve) => (allStreaming = resolve));
    const started = [];
    for (let i = 0; i < 9; i++) {
      started.push(streamed(programs[i % 3], `${tag}-k${i}`, () => ++streaming === 9 && allStreaming()));
    }
    const down = (async () => {
      for await (const s of client.nc.status()) if (s.type === "disconnect") return;
    })();
    await ready;
    await writeFile(OUTAGE_FILE, "streaming");
    await down; // nats-server is gone: these calls are sent into the outage
    const sentDown = [0, 1, 2].map((i) => streamed(late, `${tag}-late${i}`, () => {}));
    const done = await Promise.all([...started, ...sentDown]);

    assert.ok(client.recovered.resumed > 0, JSON.stringify(client.recovered));
    for (const { key, deltas, result } of done) {
      let offset = 0;
      for (const d of deltas) {
        assert.equal(d.offset, offset, `${key}: deltas in order, none repeated`);
        offset += d.tokenIds.length;
      }
      assert.deepEqual(deltas.flatMap((d) => d.tokenIds), result.tokenIds, `${key}: a token missing or repeated`);
      assert.equal(result.tokenIds.length, MAX_TOKENS);
      assert.equal(result.usage.completion_tokens, MAX_TOKENS);
    }
    const calls = Object.fromEntries(done.map(({ key, result }) => [key, { callId: result.callId, tokenIds: result.tokenIds }]));
    await writeFile(`${OUTAGE_FILE}.json`, JSON.stringify({ recovered: client.recovered, calls }));
  } finally {
    await client.close();
  }
});
