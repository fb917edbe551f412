/**
 * The classification rule of the inline keepalive protocol, byte for byte
 * the rule of the Rust core (`inlinekeepalive_core::classify`) and of the
 * reference classifier in `tests/vectors/ref_classify.py`.
 *
 * A payload (one gRPC message, after the 5-byte frame header) is read as a
 * sequence of top-level protobuf fields. It is:
 * - a **keepalive** when it is at most {@link MAX_KEEPALIVE_LEN} bytes of
 *   well-formed protobuf, has at least one field, every top-level field is
 *   field 100000000 with wire type 2, and the last one holds exactly
 *   `inline_keepalive`;
 * - a **collision** when it is well-formed, uses field 100000000 at the top
 *   level, and is not a keepalive: it is delivered, and worth a report;
 * - an **application** message otherwise (malformed bytes included): always
 *   delivered.
 *
 * @module
 */

/** The protobuf field number that carries the keepalive signature. */
export const FIELD_NUMBER = 100_000_000;

/** The signature: the 16 ASCII bytes `inline_keepalive`. */
export const SIGNATURE: Uint8Array = Uint8Array.from(
  "inline_keepalive",
  (c) => c.charCodeAt(0),
);

/** The longest payload that can still be a keepalive, in bytes. */
export const MAX_KEEPALIVE_LEN = 64;

/**
 * The request header by which a client announces that it removes
 * keepalives from the streams it receives (and the response header by which
 * a server announces that it removes the client's).
 */
export const METADATA_KEY = "wp-inline-keepalives";

/** The value of {@link METADATA_KEY} that announces support. */
export const METADATA_VALUE = "true";

/**
 * The canonical keepalive message: tag `82 90 bc fd 02` (field 100000000,
 * wire type 2), length `10`, then the signature. 22 bytes.
 */
export const KEEPALIVE_MESSAGE: Uint8Array = Uint8Array.from([
  0x82,
  0x90,
  0xbc,
  0xfd,
  0x02,
  SIGNATURE.length,
  ...SIGNATURE,
]);

/** The deepest group nesting followed, as prost's (and the core's) limit. */
const MAX_GROUP_DEPTH = 100;

/** What one message payload is, for the receiver of a stream. */
export type Classification = "keepalive" | "collision" | "application";

/** A cursor over protobuf fields; every read returns `undefined` on malformed input. */
class Fields {
  pos = 0;
  constructor(private readonly buf: Uint8Array) {}

  get done(): boolean {
    return this.pos >= this.buf.length;
  }

  /** A varint of 1 to 10 bytes whose value fits in 64 bits (over-long encodings accepted). */
  varint(): number | undefined {
    let value = 0;
    for (let i = 0; i < 10; i++) {
      const byte = this.buf[this.pos + i];
      if (byte === undefined) return undefined;
      if (i === 9 && byte > 1) return undefined;
      // Exact below 2^53; above, still larger than any bound compared with.
      value += (byte & 0x7f) * 2 ** (7 * i);
      if ((byte & 0x80) === 0) {
        this.pos += i + 1;
        return value;
      }
    }
    return undefined;
  }

  /** A tag: its field number (at least 1) and wire type (0 to 5). */
  tag(): [number, number] | undefined {
    const tag = this.varint();
    if (tag === undefined || tag > 0xffff_ffff) return undefined;
    const wireType = tag % 8;
    const number = (tag - wireType) / 8;
    if (number === 0 || wireType > 5) return undefined;
    return [number, wireType];
  }

  take(n: number): Uint8Array | undefined {
    if (n > this.buf.length - this.pos) return undefined;
    const taken = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return taken;
  }

  lengthDelimited(): Uint8Array | undefined {
    const len = this.varint();
    return len === undefined ? undefined : this.take(len);
  }

  /** Skips a value of wire type 0, 1 or 5; END_GROUP (4) here is malformed. */
  skipScalar(wireType: number): boolean {
    switch (wireType) {
      case 0:
        return this.varint() !== undefined;
      case 1:
        return this.take(8) !== undefined;
      case 5:
        return this.take(4) !== undefined;
      default:
        return false;
    }
  }

  /** Skips a group's fields up to and including its END_GROUP tag. */
  skipGroup(outer: number): boolean {
    const open = [outer];
    while (open.length > 0) {
      const tag = this.tag();
      if (tag === undefined) return false;
      const [number, wireType] = tag;
      // Like prost: the deepest group allowed may only be closed.
      if (open.length === MAX_GROUP_DEPTH && wireType !== 4) return false;
      if (wireType === 2) {
        if (this.lengthDelimited() === undefined) return false;
      } else if (wireType === 3) {
        open.push(number);
      } else if (wireType === 4) {
        if (open.pop() !== number) return false;
      } else if (!this.skipScalar(wireType)) {
        return false;
      }
    }
    return true;
  }
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * Classifies one message payload (uncompressed, without the frame header).
 * Total: every input gets an answer; it never throws.
 */
export function classify(payload: Uint8Array): Classification {
  const fields = new Fields(payload);
  let reserved = false;
  let onlySignatureFields = true;
  let lastIsSignature = false;
  let anyField = false;
  while (!fields.done) {
    const tag = fields.tag();
    if (tag === undefined) return "application";
    const [number, wireType] = tag;
    let value: Uint8Array | undefined;
    if (wireType === 2) {
      value = fields.lengthDelimited();
      if (value === undefined) return "application";
    } else if (wireType === 3) {
      if (!fields.skipGroup(number)) return "application";
    } else if (!fields.skipScalar(wireType)) {
      return "application";
    }
    anyField = true;
    if (number === FIELD_NUMBER) {
      reserved = true;
      if (value === undefined) onlySignatureFields = false;
      else lastIsSignature = equalBytes(value, SIGNATURE);
    } else {
      onlySignatureFields = false;
    }
  }
  if (!reserved) return "application";
  if (
    anyField &&
    onlySignatureFields &&
    lastIsSignature &&
    payload.length <= MAX_KEEPALIVE_LEN
  ) {
    return "keepalive";
  }
  return "collision";
}
