// The baseline for bench/chat-vs-ws.sh: a broadcast server on the npm `ws`
// package speaking the chat protocol's join / send / message / ack frames,
// written the way its documentation's broadcast example is, with the
// message serialised once per fan-out and compression off (as in chat).
//
//   node bench/chat-ws/server.js <port>
'use strict';
const { WebSocketServer, WebSocket } = require('ws');
const { randomUUID } = require('crypto');

const port = Number(process.argv[2] || 18200);
const wss = new WebSocketServer({ host: '127.0.0.1', port, perMessageDeflate: false, maxPayload: 16384 });
const rooms = new Map();
let offset = 0;

wss.on('connection', (ws) => {
  ws.rooms = new Set();
  ws.on('message', (data) => {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      ws.send(JSON.stringify({ type: 'error', code: 'bad_frame', message: 'not JSON' }));
      return;
    }
    if (frame.type === 'join') {
      let members = rooms.get(frame.room);
      if (!members) rooms.set(frame.room, (members = new Set()));
      members.add(ws);
      ws.rooms.add(frame.room);
      ws.send(JSON.stringify({
        type: 'joined', room: frame.room, position: { offset, epoch: 'node' },
        recovered: true, missed: [], presence: [],
      }));
    } else if (frame.type === 'send') {
      const members = rooms.get(frame.room);
      if (!members || !members.has(ws)) return;
      offset += 1;
      const id = randomUUID();
      const message = Buffer.from(JSON.stringify({
        type: 'message', room: frame.room, id, offset, epoch: 'node',
        user: { id: 0, name: 'publisher' }, content: frame.content, sent_at: Date.now(),
      }));
      for (const member of members) {
        if (member.readyState === WebSocket.OPEN) member.send(message, { binary: false });
      }
      ws.send(JSON.stringify({ type: 'ack', room: frame.room, id, offset }));
    }
  });
  ws.on('close', () => {
    for (const room of ws.rooms) rooms.get(room)?.delete(ws);
  });
});
console.log(`ws baseline listening on 127.0.0.1:${port}`);
