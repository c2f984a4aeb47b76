// A chat UI's request, made by Node's fetch(): a POST with `Accept: */*` and
// `Accept-Encoding: gzip, deflate`, the answer read as it arrives. Driven by
// tests/learned_routes.rs; not a test on its own.
//
//   node tests/browser/fetch-stream.mjs URL COUNT
//
// Makes COUNT requests to URL one after another and prints one JSON line per request:
//   {"step":"response","n":1,"status":200,"contentType":"text/event-stream",
//    "contentEncoding":null,"keepAlive":null,"events":12,"arrivals":[ms, ...]}
// `arrivals` holds, for each event, when the bytes that completed it arrived, in ms since the
// request was sent (fetch() decodes gzip; a held stream has every event arrive at once).
// Exit status 1 if a request fails or takes over 20 s.
const url = process.argv[2];
const count = Number(process.argv[3] || 1);

const one = async (n) => {
  const started = performance.now();
  const res = await fetch(url, {
    method: 'POST',
    headers: {
      'Accept': '*/*',
      'Accept-Encoding': 'gzip, deflate',
      'Content-Type': 'application/json',
    },
    body: JSON.stringify({ prompt: 'hello', n }),
    signal: AbortSignal.timeout(20000),
  });
  const arrivals = [];
  const dec = new TextDecoder();
  let text = '';
  const reader = res.body.getReader();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    const at = performance.now() - started;
    text += dec.decode(value, { stream: true });
    // An event ends at a blank line; the app writes LF line ends.
    let end;
    while ((end = text.indexOf('\n\n')) >= 0) {
      const block = text.slice(0, end);
      text = text.slice(end + 2);
      if (block.split('\n').some((l) => l.startsWith('data:'))) {
        arrivals.push(Math.round(at * 10) / 10);
      }
    }
  }
  return {
    step: 'response',
    n,
    status: res.status,
    contentType: res.headers.get('content-type'),
    contentEncoding: res.headers.get('content-encoding'),
    keepAlive: res.headers.get('keep-alive'),
    events: arrivals.length,
    arrivals,
  };
};

try {
  for (let n = 1; n <= count; n += 1) {
    process.stdout.write(JSON.stringify(await one(n)) + '\n');
  }
} catch (e) {
  process.stdout.write(JSON.stringify({ step: 'error', error: String(e) }) + '\n');
  process.exit(1);
}
