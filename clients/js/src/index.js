// Autellix client for Node.js: agent programs, threads and streamed LLM calls over NATS.
//
// It speaks the wire protocol of docs/protocol.md (schemas in docs/asyncapi.yaml) with the
// npm `nats` package and nothing else. Deltas carry the offset of their first token, so a
// delta replayed after an engine failover or a resume is dropped and every token is seen once;
// calls survive a NATS restart (resent until accepted, then resumed from Postgres).
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

export { AutellixClient } from "./client.js";
export { CallFailed, CallTimeout } from "./errors.js";
export { Program, Thread } from "./program.js";
export { subjects } from "./wire.js";
