// Type-checked (never run) by `npm test`: the package's declarations fit
// connect's transports and clients the way the README uses them.

import type { DescMessage, DescMethod, Message } from "@bufbuild/protobuf";
import type { Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport as webTransport } from "@connectrpc/connect-web";
import { createGrpcWebTransport as nodeTransport } from "@connectrpc/connect-node";

import {
  classify,
  classifyMessage,
  inlineKeepalives,
  type Classification,
  type InlineKeepaliveInterceptor,
  type InterceptorStats,
} from "../../dist/index.js";

const keepalives: InlineKeepaliveInterceptor = inlineKeepalives({
  onKeepalive: (method: DescMethod) => void method.name,
  onCollision: (_method: DescMethod, message: Message) => void message.$typeName,
});
const asInterceptor: Interceptor = keepalives;
webTransport({ baseUrl: "https://api.example.com", interceptors: [keepalives] });
nodeTransport({ baseUrl: "http://127.0.0.1:8080", httpVersion: "2", interceptors: [asInterceptor] });

const stats: InterceptorStats = keepalives.stats;
const removed: number = stats.keepalivesRemoved;
const announced: boolean | undefined = stats.serverAnnounced;
const byBytes: Classification = classify(new Uint8Array());
declare const schema: DescMessage;
declare const message: Message;
const byMessage: Classification = classifyMessage(schema, message);
void [removed, announced, byBytes, byMessage];
