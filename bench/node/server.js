// The Node baseline for the probe benchmark: the same app as bench-server (GET / answers
// "hello"), with @godaddy/terminus 4.12.1 serving /readyz from two cached checks.
//
// Run by the bench driver as `node bench/node/server.js`, with NODE_PATH pointing at the
// node_modules that bench/run.sh installed. Prints `listening on http://ADDR`; exits on
// SIGTERM through terminus (no delay, no cleanup work).
'use strict';

const http = require('http');
const { createTerminus } = require('@godaddy/terminus');

// Two checks whose results are cached, as the Rust side's checks are: each reads a value
// that a timer refreshes once a second, so a probe does no I/O.
const cache = { db: true, queue: true };
const refresh = setInterval(() => {
  cache.db = true;
  cache.queue = true;
}, 1000);
refresh.unref();

async function checkDb() {
  if (!cache.db) throw new Error('db down');
}

async function checkQueue() {
  if (!cache.queue) throw new Error('queue down');
}

const server = http.createServer((req, res) => {
  if (req.url === '/') {
    res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8', 'content-length': '5' });
    res.end('hello');
    return;
  }
  res.writeHead(404, { 'content-length': '0' });
  res.end();
});

createTerminus(server, {
  healthChecks: {
    '/readyz': async () => {
      await Promise.all([checkDb(), checkQueue()]);
    },
  },
  signals: ['SIGTERM'],
  headers: { 'cache-control': 'no-store', 'x-content-type-options': 'nosniff' },
});

server.listen(0, '127.0.0.1', () => {
  const { address, port } = server.address();
  process.stdout.write(`listening on http://${address}:${port}\n`);
});
