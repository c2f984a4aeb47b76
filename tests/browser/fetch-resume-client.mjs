// A fetch-based SSE client as LLM front ends use (the way @microsoft/fetch-event-source
// works): it POSTs for an answer, parses the stream itself, and when the connection breaks
// before the answer's `event: done` it sends the same request again with `Last-Event-ID`.
// Driven by tests/browser.rs; not a test on its own.
//
//   node tests/browser/fetch-resume-client.mjs URL MAX_MS
//
// Prints one JSON line when `done` arrives or MAX_MS pass:
//   {"step":"answer","events":[{"event","data","id"}...],"connects":N,"drops":N,
//    "lastEventIds":[the Last-Event-ID sent on each connect, null for none],
//    "errors":[...],"done":bool}
// A drop is a connection that ended (error or end of body) before `done`.
const [url, maxMs] = process.argv.slice(2);
const deadline = Date.now() + Number(maxMs);
const out = { events: [], connects: 0, drops: 0, lastEventIds: [], errors: [], done: false };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// The WHATWG event-stream parser's state; the last event ID persists across connections.
let lastId = '';
let data = [];
let type = '';
let line = '';
let afterCr = false;

function field(l) {
  if (l === '') {
    if (data.length) {
      out.events.push({ event: type || 'message', data: data.join('\n'), id: lastId });
      if (type === 'done') out.done = true;
    }
    data = [];
    type = '';
    return out.done;
  }
  if (l.startsWith(':')) return false;
  const i = l.indexOf(':');
  const name = i < 0 ? l : l.slice(0, i);
  let value = i < 0 ? '' : l.slice(i + 1);
  if (value.startsWith(' ')) value = value.slice(1);
  if (name === 'data') data.push(value);
  else if (name === 'event') type = value;
  else if (name === 'id' && !value.includes('\0')) lastId = value;
  return false;
}

function feed(text) {
  for (const ch of text) {
    if (ch === '\n' && afterCr) { afterCr = false; continue; }
    if (ch === '\r' || ch === '\n') {
      afterCr = ch === '\r';
      const l = line;
      line = '';
      if (field(l)) return true;
    } else {
      afterCr = false;
      line += ch;
    }
  }
  return false;
}

while (!out.done && Date.now() < deadline) {
  out.connects += 1;
  // A new connection starts with a fresh line buffer and no half-built event.
  line = ''; data = []; type = ''; afterCr = false;
  const headers = {
    Accept: 'text/event-stream',
    'Content-Type': 'application/json',
    Authorization: 'Bearer llm-user',
  };
  if (lastId) headers['Last-Event-ID'] = lastId;
  out.lastEventIds.push(lastId || null);
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), Math.max(0, deadline - Date.now()));
  try {
    const res = await fetch(url, {
      method: 'POST', headers, body: JSON.stringify({ prompt: 'tell me a story' }), signal: ac.signal,
    });
    if (res.status !== 200) throw new Error(`status ${res.status}`);
    const dec = new TextDecoder();
    for await (const chunk of res.body) {
      if (feed(dec.decode(chunk, { stream: true }))) break;
    }
    if (!out.done) out.drops += 1;
  } catch (e) {
    out.drops += 1;
    out.errors.push(String(e && (e.cause ? `${e.message}: ${e.cause.code || e.cause}` : e.message || e)));
  } finally {
    clearTimeout(timer);
    if (out.done) ac.abort();
  }
  if (!out.done) await sleep(100);
}
process.stdout.write(JSON.stringify({ step: 'answer', ...out }) + '\n');
process.exit(0);
