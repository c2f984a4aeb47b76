// Headless Chromium opening many EventSources on one origin, over the sidecar's HTTPS (h2)
// listener and, as a control, its plain HTTP/1.1 one. Driven by tests/browser.rs.
//
//   node tests/browser/many-streams.mjs N URL...
//
// For each URL (the demo page): loads it, waits for the page's own EventSource, opens N more
// on /events, waits up to 5 s, and prints one JSON line:
//   {"step":"streams","url","protocol","opened":N,"withMessage":K}
// `protocol` is the page's nextHopProtocol ("h2", "http/1.1"). Over HTTP/1.1 Chromium keeps
// at most 6 connections per host, so only 5 of the extra streams can start; over h2 they all
// share one connection. The certificate is the test's self-signed one: errors are ignored.
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const n = Number(process.argv[2]);
const urls = process.argv.slice(3);
const say = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const profile = mkdtempSync(join(tmpdir(), 'sse-sidecar-chromium-'));
let context;

try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
    headless: true,
    ignoreHTTPSErrors: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
  for (const url of urls) {
    const page = await context.newPage();
    page.on('pageerror', (e) => process.stderr.write(`page error: ${e}\n`));
    const resp = await page.goto(url, { waitUntil: 'load', timeout: 20000 });
    if (!resp || resp.status() !== 200) throw new Error(`GET ${url}: status ${resp && resp.status()}`);
    await page.waitForFunction(() => document.getElementById('state').textContent === 'open',
      null, { timeout: 20000, polling: 50 });
    const result = await page.evaluate(async (n) => {
      const got = new Array(n).fill(false);
      const sources = [];
      for (let i = 0; i < n; i++) {
        const es = new EventSource(`/events?extra=${i}`);
        es.onmessage = () => { got[i] = true; };
        sources.push(es);
      }
      const end = performance.now() + 5000;
      while (performance.now() < end && !got.every(Boolean)) {
        await new Promise((r) => setTimeout(r, 50));
      }
      sources.forEach((es) => es.close());
      return {
        protocol: performance.getEntriesByType('navigation')[0].nextHopProtocol,
        opened: n,
        withMessage: got.filter(Boolean).length,
      };
    }, n);
    say({ step: 'streams', url, ...result });
    await page.close();
  }
  await context.close();
} catch (e) {
  say({ step: 'error', message: String(e && e.stack || e) });
  if (context) await context.close().catch(() => {});
  process.exitCode = 1;
} finally {
  rmSync(profile, { recursive: true, force: true });
}
