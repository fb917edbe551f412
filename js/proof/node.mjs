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

import { createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-node";

import { inlineKeepalives } from "../dist/index.js";
import { EchoService } from "../test/support/schema.mjs";
import { resultLine } from "./result.mjs";
import { watchCase } from "./watch.mjs";

const { cases } = JSON.parse(process.argv[2]);

async function run(c) {
  const interceptor = c.interceptor ? inlineKeepalives() : undefined;
  const transport = createGrpcWebTransport({
    baseUrl: c.baseUrl,
    httpVersion: c.httpVersion,
    interceptors: interceptor ? [interceptor] : [],
  });
  return watchCase({
    name: c.name,
    client: createClient(EchoService, transport),
    interceptor,
    plan: { count: BigInt(c.plan.count), gapMs: c.plan.gapMs, size: c.plan.size, firstGapMs: 0 },
    options: { timeoutMs: c.deadlineMs },
  });
}

const results = await Promise.all(cases.map(run));
for (const r of results) console.log(resultLine(r));
// connect-node keeps idle HTTP/2 sessions open; the proof is over.
process.exit(0);
