// One proof case's outcome as one line that the Rust tests parse without a
// JSON library: `RESULT` then tab-separated key=value pairs.

/** Formats `r` ({ name, ok, code, message, elapsedMs, seqs, intact, surfaced, stats }). */
export function resultLine(r) {
  const s = r.stats ?? {};
  const clean = (value) => String(value ?? "").replace(/[\t\r\n]/g, " ");
  return [
    "RESULT",
    `name=${clean(r.name)}`,
    `ok=${r.ok}`,
    `code=${clean(r.code)}`,
    `elapsedMs=${r.elapsedMs}`,
    `seqs=${r.seqs.join(",")}`,
    `intact=${r.intact}`,
    `surfaced=${r.surfaced}`,
    `removed=${clean(s.keepalivesRemoved)}`,
    `delivered=${clean(s.messagesDelivered)}`,
    `collisions=${clean(s.collisions)}`,
    `announced=${clean(s.serverAnnounced)}`,
    `message=${clean(r.message)}`,
  ].join("\t");
}
