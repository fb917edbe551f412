/**
 * The classification rule applied to a message that protobuf-es already
 * decoded, which is all a `@connectrpc/connect` interceptor ever sees.
 *
 * A keepalive is the message `{ string signature = 100000000; }`. No
 * application schema declares field 100000000, so protobuf-es decodes a
 * keepalive, whatever the stream's message type, as an empty message whose
 * only unknown field is 100000000. The rule: a message with no known field
 * set is re-assembled from its unknown fields (tag and raw value each, in
 * order) and those bytes get the core's {@link classify}; a message with a
 * known field set is never a keepalive (a collision if it also carries
 * field 100000000).
 *
 * Every message is classified, whatever its length. The Rust receivers
 * examine only messages of at most 64 bytes on the wire and pass longer
 * ones on unread, so they do not count a long message that uses field
 * 100000000 as a collision, while this rule does. A decoded message's wire
 * length is not known here (re-encoding it need not give the sender's
 * bytes), so the two cannot be made to agree.
 *
 * Where decoding hides what the bytes said:
 * - a proto3 field without presence that the sender wrote with its default
 *   value (which protobuf encoders never do) is invisible after decoding, so
 *   such a field beside a keepalive signature reads as a keepalive;
 * - an over-long tag varint (ditto) is re-assembled in its short form,
 *   which matters only for the 64-byte length limit;
 * - a schema that *declares* field 100000000 cannot receive keepalives at
 *   all: protobuf-es reads a declared field without checking its wire type,
 *   and decoding a keepalive as such a message fails before any interceptor
 *   runs;
 * - with `readUnknownFields: false` in the transport's binary options, a
 *   keepalive decodes as an empty message and is delivered as one.
 *
 * @module
 */

import { isFieldSet } from "@bufbuild/protobuf";
import type { DescMessage, Message, UnknownField } from "@bufbuild/protobuf";

import { classify, FIELD_NUMBER } from "./classify.js";
import type { Classification } from "./classify.js";

/** Appends a varint (a tag: at most 2^32 - 1) to `out`. */
function pushVarint(out: number[], value: number): void {
  while (value >= 0x80) {
    out.push((value % 0x80) | 0x80);
    value = Math.floor(value / 0x80);
  }
  out.push(value);
}

/** The bytes of a message's unknown fields, in order: each tag, then its raw value. */
export function unknownFieldBytes(unknown: readonly UnknownField[]): Uint8Array {
  const out: number[] = [];
  for (const field of unknown) {
    pushVarint(out, field.no * 8 + field.wireType);
    for (const byte of field.data) out.push(byte);
  }
  return Uint8Array.from(out);
}

/**
 * Classifies a decoded message of type `schema` by the core's rule (see the
 * module's notes for what decoding hides). Only a `"keepalive"` may be
 * removed; the other two classes are always delivered.
 */
export function classifyMessage(
  schema: DescMessage,
  message: Message,
): Classification {
  const unknown = message.$unknown ?? [];
  const reservedUnknown = unknown.some((field) => field.no === FIELD_NUMBER);
  let knownSet = false;
  let reservedKnown = false;
  for (const field of schema.fields) {
    if (isFieldSet(message, field)) {
      knownSet = true;
      reservedKnown ||= field.number === FIELD_NUMBER;
    }
  }
  if (knownSet) {
    return reservedKnown || reservedUnknown ? "collision" : "application";
  }
  if (!reservedUnknown) return "application";
  return classify(unknownFieldBytes(unknown));
}
