// The helper's classification rule against the shared vectors
// (tests/vectors/classify.tsv), on raw bytes and on messages decoded by
// protobuf-es, which is what the interceptor sees.

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { create, fromBinary, toBinary } from "@bufbuild/protobuf";

import {
  classify,
  classifyMessage,
  KEEPALIVE_MESSAGE,
  MAX_KEEPALIVE_LEN,
  unknownFieldBytes,
} from "../dist/index.js";
import { EmptySchema, EventSchema, ItemSchema } from "./support/schema.mjs";
import { classifyVectors } from "./support/vectors.mjs";

const vectors = classifyVectors();
const hex = (bytes) => Buffer.from(bytes).toString("hex");

describe("classify (bytes)", () => {
  it("reads the vector file", () => {
    assert.ok(vectors.length >= 50, `${vectors.length} rows`);
    assert.ok(vectors.some((v) => v.expected === "keepalive"));
    assert.ok(vectors.some((v) => v.expected === "collision"));
  });

  for (const v of vectors) {
    it(`${v.name}: ${v.expected}`, () => {
      assert.equal(classify(v.payload), v.expected, v.note);
    });
  }

  it("the canonical keepalive is the 22 bytes of the wire format", () => {
    assert.equal(hex(KEEPALIVE_MESSAGE), "8290bcfd0210696e6c696e655f6b656570616c697665");
    assert.equal(classify(KEEPALIVE_MESSAGE), "keepalive");
  });

  it("every prefix of the keepalive is an application message", () => {
    for (let n = 0; n < KEEPALIVE_MESSAGE.length; n++) {
      assert.equal(classify(KEEPALIVE_MESSAGE.subarray(0, n)), "application", `${n} bytes`);
    }
  });

  it("group nesting stops where prost's does", () => {
    const nested = (depth, inner) =>
      Uint8Array.from([...Array(depth).fill(0x0b), ...inner, ...Array(depth).fill(0x0c), ...KEEPALIVE_MESSAGE]);
    assert.equal(classify(nested(100, [])), "collision");
    assert.equal(classify(nested(101, [])), "application");
    assert.equal(classify(nested(99, [0x08, 0x00])), "collision");
    assert.equal(classify(nested(100, [0x08, 0x00])), "application");
  });
});

describe("classifyMessage (decoded by protobuf-es)", () => {
  // A message with no fields: every field of a vector is an unknown field,
  // and the unknown fields re-assemble into the vector's bytes (up to
  // over-long tags, which come back short).
  for (const v of vectors) {
    it(`${v.name} as an empty message`, () => {
      let message;
      try {
        message = fromBinary(EmptySchema, v.payload);
      } catch {
        // protobuf-es refuses it: the transport fails the call, nothing is
        // delivered nor silently dropped. Malformed bytes get here, and the
        // rows where protobuf-python (upb) differs from the rule too:
        // protobuf-es also refuses tag varints longer than 5 bytes, which
        // only a hand-made keepalive has.
        assert.ok(
          v.expected === "application" || v.note.includes("protobuf-python differs"),
          `protobuf-es refused ${v.name} (${v.expected})`,
        );
        return;
      }
      assert.equal(classifyMessage(EmptySchema, message), v.expected, v.note);
    });
  }

  it("re-assembles unknown fields byte for byte", () => {
    for (const v of vectors) {
      if (v.name.includes("nonminimal") || v.name.startsWith("tag_")) continue;
      let message;
      try {
        message = fromBinary(EmptySchema, v.payload);
      } catch {
        continue;
      }
      assert.equal(hex(unknownFieldBytes(message.$unknown ?? [])), hex(v.payload), v.name);
    }
  });

  it("a keepalive decodes as an empty message of any schema without field 100000000", () => {
    for (const schema of [ItemSchema, EventSchema, EmptySchema]) {
      const message = fromBinary(schema, KEEPALIVE_MESSAGE);
      assert.equal(message.$unknown?.length, 1);
      assert.equal(message.$unknown[0].no, 100000000);
      assert.equal(classifyMessage(schema, message), "keepalive", schema.typeName);
    }
  });

  it("a known field set beside the signature makes a collision, delivered", () => {
    for (const name of ["keepalive_merged_into_event", "keepalive_then_event"]) {
      const v = vectors.find((row) => row.name === name);
      const message = fromBinary(EventSchema, v.payload);
      assert.equal(message.seq, 1n);
      assert.equal(classifyMessage(EventSchema, message), "collision", name);
    }
    const event = create(EventSchema, { seq: 7n, text: "x" });
    assert.equal(classifyMessage(EventSchema, event), "application");
    assert.equal(classifyMessage(EventSchema, create(EventSchema)), "application");
  });

  it("a message that only re-sends the keepalive's unknown field is still one", () => {
    // What the interceptor tests' server does: an Item with no field set and
    // the keepalive as its unknown field is, on the wire, the keepalive.
    const item = create(ItemSchema);
    item.$unknown = fromBinary(EmptySchema, KEEPALIVE_MESSAGE).$unknown;
    assert.equal(hex(toBinary(ItemSchema, item)), hex(KEEPALIVE_MESSAGE));
    assert.equal(classifyMessage(ItemSchema, item), "keepalive");
  });

  it("keepalive-shaped messages longer than 64 bytes are collisions", () => {
    const v = vectors.find((row) => row.name === "keepalive_padded_to_65_bytes");
    assert.equal(v.payload.length, MAX_KEEPALIVE_LEN + 1);
    const message = fromBinary(ItemSchema, v.payload);
    assert.equal(classifyMessage(ItemSchema, message), "collision");
  });

  it("known limit: a default-valued field without presence is invisible after decoding", () => {
    // `08 00` (seq = 0, which no protobuf encoder writes) then the keepalive:
    // the bytes make a collision, the decoded message is indistinguishable
    // from a keepalive. Documented in src/message.ts and the README.
    const payload = Uint8Array.from([0x08, 0x00, ...KEEPALIVE_MESSAGE]);
    assert.equal(classify(payload), "collision");
    assert.equal(classifyMessage(EventSchema, fromBinary(EventSchema, payload)), "keepalive");
  });
});
