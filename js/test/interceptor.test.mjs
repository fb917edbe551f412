// The interceptor against an in-memory server (connect's router transport):
// what the application iterates, what the server was asked, and the counts.

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { create, fromBinary } from "@bufbuild/protobuf";
import { createClient, createRouterTransport } from "@connectrpc/connect";

import { inlineKeepalives, KEEPALIVE_MESSAGE, METADATA_KEY } from "../dist/index.js";
import { EchoService, EmptySchema, ItemSchema } from "./support/schema.mjs";

/** `init` as an `Item` carrying the keepalive's field as an unknown field. */
function withSignature(init) {
  const item = create(ItemSchema, init);
  item.$unknown = fromBinary(EmptySchema, KEEPALIVE_MESSAGE).$unknown;
  return item;
}

/** The keepalive as an `Item`: no field set, the signature as its unknown field. */
const keepalive = () => withSignature({});

/** An `Item` with `seq` and, as a collision, the signature beside it. */
const collision = (seq) => withSignature({ seq });

function server(sent, seen) {
  return createRouterTransport(({ service }) => {
    service(EchoService, {
      async *watch(_plan, context) {
        seen.push(context.requestHeader.get(METADATA_KEY));
        context.responseHeader.set(METADATA_KEY, "true");
        yield* sent;
      },
    });
  });
}

async function iterate(client) {
  const got = [];
  for await (const item of client.watch({ count: 1n })) got.push(item);
  return got;
}

describe("inlineKeepalives()", () => {
  it("removes keepalives and nothing else, in order", async () => {
    const seen = [];
    const sent = [
      keepalive(),
      create(ItemSchema, { seq: 0n, payload: Uint8Array.of(1, 2) }),
      keepalive(),
      keepalive(),
      collision(1n),
      create(ItemSchema), // empty: an application message, not a keepalive
      create(ItemSchema, { seq: 2n }),
      keepalive(),
    ];
    const interceptor = inlineKeepalives();
    const removed = [];
    const collisions = [];
    const options = {
      onKeepalive: (method) => removed.push(method.name),
      onCollision: (_method, message) => collisions.push(message.seq),
    };
    const counted = inlineKeepalives(options);
    for (const used of [interceptor, counted]) {
      const client = createClient(
        EchoService,
        createRouterTransport(({ service }) => {
          service(EchoService, {
            async *watch(_plan, context) {
              seen.push(context.requestHeader.get(METADATA_KEY));
              context.responseHeader.set(METADATA_KEY, "true");
              yield* sent;
            },
          });
        }, { transport: { interceptors: [used] } }),
      );
      const got = await iterate(client);
      assert.deepEqual(
        got.map((item) => [item.seq, item.payload.length, item.$unknown?.length ?? 0]),
        [
          [0n, 2, 0],
          [1n, 0, 1],
          [0n, 0, 0],
          [2n, 0, 0],
        ],
      );
      assert.deepEqual(
        { ...used.stats },
        { keepalivesRemoved: 4, collisions: 1, messagesDelivered: 4, serverAnnounced: true },
      );
    }
    assert.deepEqual(seen, ["true", "true"]);
    assert.deepEqual(removed, ["Watch", "Watch", "Watch", "Watch"]);
    assert.deepEqual(collisions, [1n]);
  });

  it("counts a collision whatever its length, unlike the Rust receivers", async () => {
    // The Rust filter examines only messages of at most 64 bytes; the
    // interceptor cannot know a decoded message's wire length, so it
    // examines all of them (README and InterceptorStats.collisions say so).
    const long = collision(3n);
    long.payload = new Uint8Array(200);
    const thrice = new Uint8Array(3 * KEEPALIVE_MESSAGE.length);
    for (let i = 0; i < 3; i++) thrice.set(KEEPALIVE_MESSAGE, i * KEEPALIVE_MESSAGE.length);
    const keepaliveShaped = create(ItemSchema); // 66 bytes of signatures: too long to be a keepalive
    keepaliveShaped.$unknown = fromBinary(EmptySchema, thrice).$unknown;
    const interceptor = inlineKeepalives();
    const client = createClient(
      EchoService,
      createRouterTransport(({ service }) => {
        service(EchoService, {
          async *watch() {
            yield long;
            yield keepaliveShaped;
            yield keepalive();
          },
        });
      }, { transport: { interceptors: [interceptor] } }),
    );
    const got = await iterate(client);
    assert.deepEqual(got.map((item) => [item.seq, item.payload.length]), [[3n, 200], [0n, 0]]);
    assert.equal(interceptor.stats.collisions, 2);
    assert.equal(interceptor.stats.keepalivesRemoved, 1);
    assert.equal(interceptor.stats.messagesDelivered, 2);
  });

  it("without it, a keepalive reaches the application as an empty message", async () => {
    const seen = [];
    const client = createClient(EchoService, server([keepalive(), create(ItemSchema, { seq: 5n })], seen));
    const got = await iterate(client);
    assert.equal(got.length, 2);
    assert.equal(got[0].seq, 0n);
    assert.equal(got[0].$unknown?.[0]?.no, 100000000);
    assert.deepEqual(seen, [null], "no header without the interceptor");
  });

  it("reports a server that does not announce support", async () => {
    const interceptor = inlineKeepalives();
    const client = createClient(
      EchoService,
      createRouterTransport(({ service }) => {
        service(EchoService, {
          async *watch() {
            yield create(ItemSchema, { seq: 9n });
          },
        });
      }, { transport: { interceptors: [interceptor] } }),
    );
    const got = await iterate(client);
    assert.deepEqual(got.map((item) => item.seq), [9n]);
    assert.equal(interceptor.stats.serverAnnounced, false);
    assert.equal(interceptor.stats.keepalivesRemoved, 0);
  });

  it("closes the stream below it when its own is closed", async () => {
    // connect's clients never close a stream early (they cancel through an
    // AbortSignal), but a caller of the interceptor may: called directly,
    // its filtered stream passes `return()` on to the transport's.
    let closed = false;
    async function* fromTransport() {
      try {
        for (let seq = 0n; ; seq++) {
          yield keepalive();
          yield create(ItemSchema, { seq });
        }
      } finally {
        closed = true;
      }
    }
    const [watch] = EchoService.methods;
    const header = new Headers();
    const next = async (req) => ({ ...req, header: new Headers(), trailer: new Headers(), message: fromTransport() });
    const res = await inlineKeepalives()(next)({ stream: true, method: watch, header, message: [] });
    assert.equal(header.get(METADATA_KEY), "true");
    const got = [];
    for await (const item of res.message) {
      got.push(item.seq);
      if (got.length === 3) break;
    }
    assert.deepEqual(got, [0n, 1n, 2n]);
    assert.ok(closed, "the transport's stream was closed");
  });

  it("passes unary calls through untouched", async () => {
    const header = new Headers();
    const response = { stream: false, message: create(ItemSchema) };
    const res = await inlineKeepalives()(async () => response)({ stream: false, header });
    assert.equal(res, response);
    assert.equal(header.get(METADATA_KEY), null, "no header on a unary call");
  });
});
