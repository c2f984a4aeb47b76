// A second real client: Node's `eventsource` package (the WHATWG EventSource for Node) on a
// stream through the sidecar. Driven by tests/browser.rs; not a test on its own.
//
//   node tests/browser/eventsource-client.mjs http://127.0.0.1:PORT/events N
//
// Collects N message events, closes, and prints one JSON line on stdout:
//   {"messages":[{"type","data","lastEventId"}...], "raw":"<body bytes as received>",
//    "opens":1, "errors":[...], "status":200, "contentType":"text/event-stream"}
// `raw` is a tee of the same response body the library parsed (through its `fetch` option),
// so the test can check the library's events against a spec parser and see the heartbeat
// comments it had to ignore. Exit status 1 if N messages did not arrive within 20 s.
import { EventSource } from 'eventsource';

const url = process.argv[2];
const want = Number(process.argv[3] || 3);
const out = { messages: [], raw: '', opens: 0, errors: [], status: null, contentType: null };

const teeFetch = async (input, init) => {
  const res = await fetch(input, init);
  out.status = res.status;
  out.contentType = res.headers.get('content-type');
  if (!res.body) return res;
  const [mine, theirs] = res.body.tee();
  (async () => {
    const dec = new TextDecoder();
    const reader = mine.getReader();
    for (;;) {
      const { value, done } = await reader.read().catch(() => ({ done: true }));
      if (done) break;
      out.raw += dec.decode(value, { stream: true });
    }
  })();
  return new Response(theirs, { status: res.status, statusText: res.statusText, headers: res.headers });
};

const es = new EventSource(url, { fetch: teeFetch });
const finish = (code) => {
  es.close();
  process.stdout.write(JSON.stringify(out) + '\n');
  process.exit(code);
};
es.onopen = () => { out.opens += 1; };
es.onerror = (e) => { out.errors.push(String(e && (e.message || e.type))); };
es.onmessage = (e) => {
  out.messages.push({ type: e.type, data: e.data, lastEventId: e.lastEventId });
  // Let the bytes that completed this event reach the tee too.
  if (out.messages.length >= want) setTimeout(() => finish(0), 20);
};
setTimeout(() => finish(1), 20000);
