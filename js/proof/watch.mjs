// The proofs' one case, in Node and in the browser alike: watch a server
// stream through a client (with or without the interceptor) and record what
// the application's code got.

import { Code, ConnectError } from "@connectrpc/connect";

/** Whether `item` is what the server's `Watch` sends for its `seq`. */
function intact(item, size) {
  return item.payload.length === size && item.payload.every((b) => b === Number(item.seq % 251n));
}

/**
 * Runs `client.watch(plan, options)` to its end and returns the outcome
 * ({ name, ok, code, message, elapsedMs, seqs, intact, surfaced, stats }).
 * `onItem(item, elapsedMs)` sees each item as it arrives.
 */
export async function watchCase({ name, client, interceptor, plan, options, onItem }) {
  const started = performance.now();
  const result = { name, ok: true, code: null, message: null, seqs: [], intact: true, surfaced: 0 };
  try {
    for await (const item of client.watch(plan, options)) {
      // The application's own code: it sees only what the transport and
      // the interceptor hand it.
      result.seqs.push(Number(item.seq));
      result.intact &&= intact(item, plan.size);
      // A keepalive that reached the application: an item with unknown fields.
      if ((item.$unknown?.length ?? 0) > 0) result.surfaced += 1;
      onItem?.(item, Math.round(performance.now() - started));
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
