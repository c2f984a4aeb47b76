// Headless Chromium's EventSource on one stream, recording every message. Driven by
// tests/browser.rs (the resume tests put a connection-cutting proxy in front of the sidecar);
// not a test on its own.
//
//   node tests/browser/resume-page.mjs http://127.0.0.1:PORT STREAM_PATH LAST_SEQ MAX_MS
//
// The page is served by playwright itself at http://127.0.0.1:PORT/resume-page.html, so the
// stream is same-origin (no CORS). It opens EventSource(STREAM_PATH) and records each
// message's data and lastEventId, each open and each error, until the message whose data has
// "seq": LAST_SEQ arrives or MAX_MS pass; then it closes the EventSource and prints one line:
//   {"step":"messages","messages":[{"data","lastEventId"}...],"opens":N,
//    "errors":[readyState at each error...],"done":bool,"ms":elapsed}
//   {"step":"error","message"}  anything that went wrong (exit status 1)
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [base, path, lastSeq, maxMs] = process.argv.slice(2);
const say = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const profile = mkdtempSync(join(tmpdir(), 'sse-sidecar-chromium-'));
let context;

try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
  const page = context.pages()[0] ?? (await context.newPage());
  page.on('pageerror', (e) => process.stderr.write(`page error: ${e}\n`));
  const pageUrl = new URL('/resume-page.html', base).href;
  await page.route(pageUrl, (route) => route.fulfill({
    status: 200,
    contentType: 'text/html',
    body: '<!doctype html><title>resume</title><p>EventSource under test</p>',
  }));
  await page.goto(pageUrl, { waitUntil: 'load', timeout: 20000 });
  // No interception while the stream runs: the EventSource talks to the network as usual.
  await page.unroute(pageUrl);
  const result = await page.evaluate(async ({ path, lastSeq, maxMs }) => {
    const out = { messages: [], opens: 0, errors: [], done: false, ms: 0 };
    const t0 = performance.now();
    await new Promise((resolve) => {
      const es = new EventSource(path);
      const finish = () => { es.close(); resolve(); };
      es.onopen = () => { out.opens += 1; };
      es.onerror = () => { out.errors.push(es.readyState); };
      es.onmessage = (e) => {
        out.messages.push({ data: e.data, lastEventId: e.lastEventId });
        let seq = null;
        try { seq = JSON.parse(e.data).seq; } catch { /* not the origin's payload */ }
        if (seq === lastSeq) { out.done = true; finish(); }
      };
      setTimeout(finish, maxMs);
    });
    out.ms = Math.round(performance.now() - t0);
    return out;
  }, { path, lastSeq: Number(lastSeq), maxMs: Number(maxMs) });
  say({ step: 'messages', ...result });
  await context.close();
} catch (e) {
  say({ step: 'error', message: String(e && e.stack || e) });
  if (context) await context.close().catch(() => {});
  process.exitCode = 1;
} finally {
  rmSync(profile, { recursive: true, force: true });
}
