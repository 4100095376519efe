// The peer of bench/notifications-vs-sse.sh: a minimal server-sent events
// broadcaster on Node's own `http` module, doing what the notifications
// service does for a fan-out: every open stream of a user gets each of
// that user's notifications, numbered, as one `id:`/`event:`/`data:` block.
//
//   node server.js <port>
//   GET  /stream?user=<n>           text/event-stream
//   POST /publish?user=<n>  <body>  every stream of user n gets the body
'use strict';
const http = require('http');

const port = Number(process.argv[2] || 18300);
const streams = new Map(); // user -> Set of responses
const seqs = new Map();

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://x');
  const user = url.searchParams.get('user') || '0';
  if (req.method === 'GET' && url.pathname === '/stream') {
    res.writeHead(200, {
      'content-type': 'text/event-stream',
      'cache-control': 'no-cache',
    });
    res.write('retry: 3000\n: connected\n\n');
    let set = streams.get(user);
    if (!set) streams.set(user, (set = new Set()));
    set.add(res);
    req.on('close', () => set.delete(res));
    return;
  }
  if (req.method === 'POST' && url.pathname === '/publish') {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const seq = (seqs.get(user) || 0) + 1;
      seqs.set(user, seq);
      // Serialised once per fan-out, written to every stream.
      const block = `id: ${seq}\nevent: notification\ndata: ${Buffer.concat(chunks)}\n\n`;
      for (const s of streams.get(user) || []) s.write(block);
      res.writeHead(204).end();
    });
    return;
  }
  res.writeHead(404).end();
});
server.keepAliveTimeout = 60000;
server.listen(port, '127.0.0.1');
