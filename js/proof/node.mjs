// The Node proof: connect-node's gRPC-Web transport, with and without the
// interceptor, against a tonic server with tonic-web and the keepalive
// layer. Run by tests/tests/grpc_web_node.rs, which starts the server and
// the proxies and checks what this prints.
//
//   node proof/node.mjs '<json>'
//
// The argument is { "cases": [ { "name", "baseUrl", "httpVersion": "1.1"|"2",
// "interceptor": bool, "plan": { "count", "gapMs", "size" },
// "deadlineMs" } ] }. Every case runs at once, each with its own transport
// (its own connection); for each, one `RESULT` line is printed (see
// proof/result.mjs).

import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-node";

import { inlineKeepalives } from "../dist/index.js";
import { EchoService } from "../test/support/schema.mjs";
import { resultLine } from "./result.mjs";

const { cases } = JSON.parse(process.argv[2]);

/** Whether `item` is what the server's `Watch` sends for its `seq`. */
function intact(item, size) {
  return item.payload.length === size && item.payload.every((b) => b === Number(item.seq % 251n));
}

async function run(c) {
  const interceptor = c.interceptor ? inlineKeepalives() : undefined;
  const transport = createGrpcWebTransport({
    baseUrl: c.baseUrl,
    httpVersion: c.httpVersion,
    interceptors: interceptor ? [interceptor] : [],
  });
  const client = createClient(EchoService, transport);
  const started = performance.now();
  const result = { name: c.name, ok: true, code: null, message: null, seqs: [], intact: true, surfaced: 0 };
  try {
    const plan = { count: BigInt(c.plan.count), gapMs: c.plan.gapMs, size: c.plan.size, firstGapMs: 0 };
    for await (const item of client.watch(plan, { timeoutMs: c.deadlineMs })) {
      result.seqs.push(Number(item.seq));
      result.intact &&= intact(item, c.plan.size);
      // A keepalive that reached the application: an item with unknown fields.
      if ((item.$unknown?.length ?? 0) > 0) result.surfaced += 1;
    }
  } catch (error) {
    const e = ConnectError.from(error);
    result.ok = false;
    result.code = Code[e.code];
    result.message = e.rawMessage;
  }
  result.elapsedMs = Math.round(performance.now() - started);
  result.stats = interceptor ? { ...interceptor.stats } : null;
  return result;
}

const results = await Promise.all(cases.map(run));
for (const r of results) console.log(resultLine(r));
// connect-node keeps idle HTTP/2 sessions open; the proof is over.
process.exit(0);
