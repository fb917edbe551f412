// Bundles the browser proof's page (proof/page.mjs, with connect-web,
// protobuf-es and this package's dist/) into dist/proof/page.js. Part of
// `npm run build`, after tsc.

import { build } from "esbuild";

await build({
  entryPoints: [new URL("page.mjs", import.meta.url).pathname],
  outfile: new URL("../dist/proof/page.js", import.meta.url).pathname,
  bundle: true,
  format: "iife",
  platform: "browser",
  target: "es2020",
  logLevel: "warning",
});
