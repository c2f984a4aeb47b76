// Headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core) on the demo page,
// through the sidecar. Driven by tests/browser.rs; not a test on its own.
//
//   node tests/browser/page.mjs http://127.0.0.1:PORT/ [SCREENSHOT_DIR]
//
// Reports JSON lines on stdout, one per step:
//   {"step":"rendered", ...}     the page shows >= 3 events and the stream is open; the test
//                                now stops the sidecar (SIGTERM) and starts a new one
//   {"step":"reconnected", ...}  the page's EventSource reconnected by itself and rendered
//                                events again; carries the id the page had when the stream
//                                dropped and every id it rendered before and after
//   {"step":"error", "message"}  anything that went wrong (exit status 1)
// Everything the page logs goes to stderr.
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const url = process.argv[2];
const shotDir = process.argv[3];
const executablePath = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const RENDER_MS = 20000;
const RECONNECT_MS = 25000;

const say = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const profile = mkdtempSync(join(tmpdir(), 'sse-sidecar-chromium-'));
let context;

async function main() {
  // A persistent context is how playwright takes a --user-data-dir: a fresh one per run.
  context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    viewport: { width: 900, height: 900 },
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
  const page = context.pages()[0] ?? (await context.newPage());
  page.on('console', (m) => process.stderr.write(`page console ${m.type()}: ${m.text()}\n`));
  page.on('pageerror', (e) => process.stderr.write(`page error: ${e}\n`));

  // Watch what the page renders, from before its script runs: every event row added to
  // #events and every change of the connection state, with the last id shown at that moment.
  await page.addInitScript(() => {
    window.__rows = [];
    window.__states = [];
    document.addEventListener('DOMContentLoaded', () => {
      const $ = (id) => document.getElementById(id);
      new MutationObserver((records) => {
        for (const r of records) {
          for (const n of r.addedNodes) {
            if (n.nodeName === 'LI') window.__rows.push({ t: performance.now(), id: n.dataset.id, text: n.textContent });
          }
        }
      }).observe($('events'), { childList: true });
      new MutationObserver(() => {
        window.__states.push({ t: performance.now(), state: $('state').textContent, lastId: $('last-id').textContent });
      }).observe($('state'), { childList: true, characterData: true, subtree: true });
    });
  });

  const resp = await page.goto(url, { waitUntil: 'load', timeout: RENDER_MS });
  if (!resp || resp.status() !== 200) throw new Error(`GET ${url}: status ${resp && resp.status()}`);

  await page.waitForFunction(
    () => document.getElementById('state').textContent === 'open'
      && Number(document.getElementById('count').textContent) >= 3,
    null, { timeout: RENDER_MS, polling: 50 });
  if (shotDir) await page.screenshot({ path: join(shotDir, 'rendered.png') });
  const before = await page.evaluate(() => ({
    rows: window.__rows.map((r) => r.id),
    shown: [...document.querySelectorAll('#events li')].map((li) => li.textContent),
    lastId: document.getElementById('last-id').textContent,
    count: Number(document.getElementById('count').textContent),
    state: document.getElementById('state').textContent,
  }));
  say({ step: 'rendered', ...before });

  // The test restarts the sidecar now. Wait for: the stream dropping (state "connecting"),
  // the EventSource opening again, and at least two events rendered after the drop.
  await page.waitForFunction(() => {
    const drop = window.__states.find((s) => s.state === 'connecting');
    if (!drop) return false;
    const reopened = window.__states.some((s) => s.t > drop.t && s.state === 'open');
    return reopened && window.__rows.filter((r) => r.t > drop.t).length >= 2;
  }, null, { timeout: RECONNECT_MS, polling: 50 });
  if (shotDir) await page.screenshot({ path: join(shotDir, 'reconnected.png') });
  const after = await page.evaluate(() => {
    const drop = window.__states.find((s) => s.state === 'connecting');
    return {
      idAtDrop: drop.lastId,
      rowsBefore: window.__rows.filter((r) => r.t <= drop.t).map((r) => r.id),
      rowsAfter: window.__rows.filter((r) => r.t > drop.t).map((r) => r.id),
      textsAfter: window.__rows.filter((r) => r.t > drop.t).map((r) => r.text),
      states: window.__states.map((s) => `${s.state}@${Math.round(s.t)}ms(last ${s.lastId})`),
      count: Number(document.getElementById('count').textContent),
    };
  });
  say({ step: 'reconnected', ...after });
}

try {
  await main();
  await context.close();
  process.exitCode = 0;
} catch (e) {
  say({ step: 'error', message: String(e && e.stack || e) });
  if (context) await context.close().catch(() => {});
  process.exitCode = 1;
} finally {
  rmSync(profile, { recursive: true, force: true });
}
