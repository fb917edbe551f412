// The browser proof's driver: Debian's chromium, headless, through
// puppeteer-core (which downloads no browser). Run by
// tests/tests/grpc_web_browser.rs:
//
//   node proof/browser.mjs <chromium> <page url> <timeout ms>
//
// Opens the page, waits for its `window.__result`, and prints a `RESULT`
// line per case (see proof/result.mjs), what the page showed and what the
// browser logged.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import puppeteer from "puppeteer-core";

import { resultLine } from "./result.mjs";

const [executablePath, url, timeoutMs] = process.argv.slice(2);
const profile = mkdtempSync(join(tmpdir(), "inlinekeepalive-chromium-"));
const log = [];
const browser = await puppeteer.launch({
  executablePath,
  headless: true,
  // The h2 case's nginx has a self-signed certificate (browsers speak h2
  // only over TLS).
  acceptInsecureCerts: true,
  userDataDir: profile,
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--ignore-certificate-errors",
    "--disable-dev-shm-usage",
  ],
});
let result;
let version = "";
try {
  version = await browser.version();
  const page = await browser.newPage();
  page.on("console", (message) => log.push(`console.${message.type()}: ${message.text()}`));
  page.on("pageerror", (error) => log.push(`page error: ${error.message}`));
  page.on("requestfailed", (request) =>
    log.push(`request failed: ${request.method()} ${request.url()}: ${request.failure()?.errorText}`),
  );
  await page.goto(url, { waitUntil: "load" });
  await page.waitForFunction(() => window.__result !== undefined, {
    timeout: Number(timeoutMs),
    polling: 200,
  });
  result = await page.evaluate(() => window.__result);
  result.text = await page.evaluate(() => document.body.innerText);
} catch (error) {
  result = { error: String(error) };
} finally {
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
console.log(`BROWSER\t${version}\t${result.userAgent ?? ""}\t${result.origin ?? ""}`);
for (const line of (result.text ?? "").split("\n")) console.log(`PAGE\t${line}`);
for (const line of log) console.log(`LOG\t${line.replace(/[\r\n]/g, " ")}`);
if (result.error) console.log(`ERROR\t${result.error.replace(/[\r\n]/g, " ")}`);
for (const c of result.cases ?? []) console.log(resultLine(c));
