// The shared classification vectors (tests/vectors/classify.tsv; see
// tests/vectors/README.md).

import { readFileSync } from "node:fs";

const FILE = new URL("../../../tests/vectors/classify.tsv", import.meta.url);

/** Rows of classify.tsv: { name, payload: Uint8Array, expected, note }. */
export function classifyVectors() {
  const [header, ...lines] = readFileSync(FILE, "utf8").split("\n").filter((l) => l !== "");
  const columns = header.split("\t");
  return lines.map((line) => {
    const cells = line.split("\t");
    const row = Object.fromEntries(columns.map((c, i) => [c, cells[i] ?? ""]));
    return {
      name: row.name,
      payload: Uint8Array.from(Buffer.from(row.payload_hex, "hex")),
      // KEEPALIVE, COLLISION, APPLICATION -> the JS names.
      expected: row.expected.toLowerCase(),
      note: row.note,
    };
  });
}
