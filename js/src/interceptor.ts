/**
 * An interceptor for `@connectrpc/connect` clients (connect-web in
 * browsers, connect-node in Node) that asks a server for inline keepalives
 * and removes them from streamed responses before the application iterates
 * them.
 *
 * @module
 */

import type { DescMessage, DescMethod, Message } from "@bufbuild/protobuf";
import type { Interceptor, StreamResponse } from "@connectrpc/connect";

import { METADATA_KEY, METADATA_VALUE } from "./classify.js";
import { classifyMessage } from "./message.js";

/**
 * What one interceptor has seen, summed over all the calls it intercepted
 * (the Rust tonic layers count per stream instead).
 */
export interface InterceptorStats {
  /** Keepalives removed from response streams. */
  keepalivesRemoved: number;
  /**
   * Messages delivered that use field 100000000 without being a keepalive
   * (a schema using the reserved number), whatever their length.
   *
   * The Rust receivers count fewer: they examine only messages of at most
   * 64 bytes on the wire and pass longer ones on unread, so a long message
   * using field 100000000 is a collision here and not there. The
   * interceptor sees decoded messages, whose wire length it cannot know
   * (re-encoding need not give the same bytes), so it cannot apply that
   * limit; it examines every streamed message instead.
   */
  collisions: number;
  /** Messages delivered to the application, collisions included. */
  messagesDelivered: number;
  /**
   * Whether the last streamed response carried `wp-inline-keepalives: true`
   * (the server removes the client's keepalives). In a browser the server
   * must expose the header (CORS `Access-Control-Expose-Headers`), else it
   * reads `false`. `undefined` before the first response.
   */
  serverAnnounced: boolean | undefined;
}

/** Options of {@link inlineKeepalives}. */
export interface InlineKeepaliveOptions {
  /** Called after each keepalive removed. */
  onKeepalive?: (method: DescMethod) => void;
  /**
   * Called for each collision (see {@link InterceptorStats.collisions}),
   * which is delivered as usual.
   */
  onCollision?: (method: DescMethod, message: Message) => void;
}

/** An interceptor that also counts what it did. */
export type InlineKeepaliveInterceptor = Interceptor & {
  /** Live counters, updated as responses are iterated. */
  readonly stats: InterceptorStats;
};

/**
 * Creates the interceptor. On every streaming call (server-streaming, and
 * client-streaming or bidirectional where the transport can) it sends
 * `wp-inline-keepalives: true`, so a server with inline keepalives may send
 * them while the response stream is idle, and removes each keepalive from
 * the response stream; every other message is delivered, in order,
 * untouched. Unary calls pass through: no keepalive is ever sent in a unary
 * response.
 *
 * Only server-to-client keepalives are handled: a browser cannot stream a
 * request, so the client never needs to send any.
 *
 * ```ts
 * const transport = createGrpcWebTransport({
 *   baseUrl: "https://api.example.com",
 *   interceptors: [inlineKeepalives()],
 * });
 * ```
 */
export function inlineKeepalives(
  options: InlineKeepaliveOptions = {},
): InlineKeepaliveInterceptor {
  const stats: InterceptorStats = {
    keepalivesRemoved: 0,
    collisions: 0,
    messagesDelivered: 0,
    serverAnnounced: undefined,
  };
  const interceptor: Interceptor = (next) => async (req) => {
    if (!req.stream) return next(req);
    req.header.set(METADATA_KEY, METADATA_VALUE);
    const res = await next(req);
    if (!res.stream) return res;
    stats.serverAnnounced =
      res.header.get(METADATA_KEY)?.trim().toLowerCase() === METADATA_VALUE;
    const filtered: StreamResponse<DescMessage, DescMessage> = {
      ...res,
      message: withoutKeepalives(res.message, req.method, stats, options),
    };
    return filtered;
  };
  return Object.assign(interceptor, { stats });
}

async function* withoutKeepalives(
  messages: AsyncIterable<Message>,
  method: DescMethod,
  stats: InterceptorStats,
  options: InlineKeepaliveOptions,
): AsyncGenerator<Message> {
  const schema = method.output;
  for await (const message of messages) {
    switch (classifyMessage(schema, message)) {
      case "keepalive":
        stats.keepalivesRemoved += 1;
        options.onKeepalive?.(method);
        continue;
      case "collision":
        stats.collisions += 1;
        options.onCollision?.(method, message);
        break;
      case "application":
        break;
    }
    stats.messagesDelivered += 1;
    yield message;
  }
}
