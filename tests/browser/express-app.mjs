// A chat backend written the common way: Express with `app.use(compression())` on every
// route, streaming tokens as text/event-stream with res.write() and no res.flush(). Driven by
// tests/learned_routes.rs; not a test on its own.
//
//   node tests/browser/express-app.mjs PORT_FILE
//
// POST /api/chat and POST /api/chat/:id/stream answer an event stream of `tokens` events
// (query, default 12), the first at once and then one every `gap_ms` (default 150), then end.
// Each event is `data: {"token":N}`. Listens on 127.0.0.1, on a port the system picks (a port
// chosen beforehand could be taken by a parallel test first), writes that port to PORT_FILE,
// and serves until killed.
import express from 'express';
import compression from 'compression';

import { writeFileSync } from 'node:fs';

const portFile = process.argv[2];
const app = express();
app.use(compression());
app.use(express.json());

const tokens = (req, res) => {
  const n = Number(req.query.tokens || 12);
  const gap = Number(req.query.gap_ms || 150);
  res.status(200);
  res.setHeader('Content-Type', 'text/event-stream');
  res.setHeader('Cache-Control', 'no-cache');
  let i = 0;
  let timer = null;
  const send = () => {
    i += 1;
    res.write(`data: {"token":${i}}\n\n`);
    if (i >= n) {
      res.end();
    } else {
      timer = setTimeout(send, gap);
    }
  };
  res.on('close', () => clearTimeout(timer));
  send();
};
app.post('/api/chat', tokens);
app.post('/api/chat/:id/stream', tokens);

const server = app.listen(0, '127.0.0.1', () => {
  writeFileSync(portFile, String(server.address().port));
});
