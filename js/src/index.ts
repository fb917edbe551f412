/**
 * Inline keepalives (HashiCorp Waypoint's protocol) for `@connectrpc/connect`
 * clients, in browsers and Node: an interceptor that asks for keepalives and
 * removes them from server streams, and the classification rule behind it.
 *
 * @module
 */

export {
  classify,
  FIELD_NUMBER,
  KEEPALIVE_MESSAGE,
  MAX_KEEPALIVE_LEN,
  METADATA_KEY,
  METADATA_VALUE,
  SIGNATURE,
} from "./classify.js";
export type { Classification } from "./classify.js";
export { classifyMessage, unknownFieldBytes } from "./message.js";
export { inlineKeepalives } from "./interceptor.js";
export type {
  InlineKeepaliveInterceptor,
  InlineKeepaliveOptions,
  InterceptorStats,
} from "./interceptor.js";
