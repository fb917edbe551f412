// The browser proof's page: connect-web's gRPC-Web transport with the
// interceptor, and one without it, each watching a server stream through
// the proxy. Bundled by proof/bundle.mjs into dist/proof/page.js; served by
// tests/tests/grpc_web_browser.rs from an origin other than the API's, so
// every call needs CORS (a preflight for the request headers, exposed
// response headers).
//
// Query parameters: api (an API base URL; repeat it to watch through
// several), count, gapMs, size. For the i-th api, the inline call asks for
// items of size + 2i bytes and the plain call size + 2i + 1, so the
// server's reports tell all the calls apart.
// The outcome goes to `window.__result` and, for a person, to the page.

import { createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";

import { inlineKeepalives } from "../dist/index.js";
import { EchoService } from "../test/support/schema.mjs";
import { watchCase } from "./watch.mjs";

const params = new URLSearchParams(location.search);
const apis = params.getAll("api");
const plan = {
  count: BigInt(params.get("count") ?? "2"),
  gapMs: Number(params.get("gapMs") ?? "10500"),
  size: Number(params.get("size") ?? "64"),
  firstGapMs: 0,
};

function show(text) {
  const line = document.createElement("pre");
  line.textContent = text;
  document.body.append(line);
}

async function watch(name, api, withHelper, size) {
  const interceptor = withHelper ? inlineKeepalives() : undefined;
  const client = createClient(
    EchoService,
    createGrpcWebTransport({ baseUrl: api, interceptors: interceptor ? [interceptor] : [] }),
  );
  const result = await watchCase({
    name,
    client,
    interceptor,
    plan: { ...plan, size },
    onItem: (item, ms) => show(`${name}: message ${item.seq} after ${ms} ms`),
  });
  show(
    `${name}: ${result.ok ? "survived" : `died (${result.code}: ${result.message})`} after ` +
      `${result.elapsedMs} ms; messages ${JSON.stringify(result.seqs)}; ` +
      `keepalives removed ${result.stats?.keepalivesRemoved ?? "-"}, reaching the page ${result.surfaced}`,
  );
  return result;
}

show(`watching ${apis.join(" and ")} (${plan.count} messages, ${plan.gapMs} ms apart)`);
const calls = apis.flatMap((api, i) => [
  watch(`inline#${i}`, api, true, plan.size + 2 * i),
  watch(`plain#${i}`, api, false, plan.size + 2 * i + 1),
]);
Promise.all(calls).then(
  (cases) => {
    show("done");
    window.__result = { userAgent: navigator.userAgent, origin: location.origin, cases };
  },
  (error) => {
    window.__result = { error: String(error) };
  },
);
