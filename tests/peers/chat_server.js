// An SSE chat server we did not write, in the shape of the classic Node tutorial: the
// load tester's peer. Node's own `http` module, nothing installed.
//
//   node tests/peers/chat_server.js [--leak-every N]
//
// It listens on a free loopback port and logs `Running on http://127.0.0.1:PORT` on
// stderr, then a line for every client that leaves.
//
// - GET /chat streams text/event-stream: first `event: hello` (no id), then every
//   message as `id: N` + `data:`, resumed from a short history after Last-Event-ID.
// - POST /chat with a text body pushes it to every client; answered 202 {"id": "N"}.
// - No count of its own: judge it by its process (`trio-sse loadtest --server-pid`).
//
// With --leak-every N, one client in N is "parked": greeted, then never read from,
// written to or closed again, and forgotten. When that client leaves, this server never
// notices (no log line, no close): the socket sits in CLOSE_WAIT, a ghost only /proc
// can see. The log names each parked client.
"use strict";

const http = require("http");

// Messages kept for a resume: a few seconds of a test's publishing.
const HISTORY_SIZE = 1000;
// A message is one small POST.
const MAX_BODY = 64 * 1024;

const leakArg = process.argv.indexOf("--leak-every");
const leakEvery = leakArg > 0 ? Number(process.argv[leakArg + 1]) : 0;
if (!Number.isInteger(leakEvery) || leakEvery < 0) {
  console.error("--leak-every needs a whole number >= 0");
  process.exit(2);
}

const clients = new Set();
const history = [];
let lastId = 0;
let streamsOpened = 0;

function frame(id, text) {
  const lines = text.split(/\r\n|\r|\n/).map((line) => `data: ${line}\n`);
  return `id: ${id}\n${lines.join("")}\n`;
}

function answer(res, status, body) {
  res.writeHead(status, { "Content-Type": "application/json" });
  res.end(JSON.stringify(body));
}

function openStream(req, res) {
  streamsOpened += 1;
  const number = streamsOpened;
  res.writeHead(200, {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
  });
  res.write(`event: hello\ndata: {"client": ${number}}\n\n`);
  if (leakEvery > 0 && number % leakEvery === 0) {
    // The deliberate bug: never read again (so the client's FIN is never seen), never
    // written to, never closed. Paused on the next turn: the http module resumes the
    // socket itself once this handler returns.
    setImmediate(() => req.socket.pause());
    console.error(`client ${number} parked`);
    return;
  }
  const after = Number(req.headers["last-event-id"]) || 0;
  for (const [id, text] of history) {
    if (id > after) res.write(frame(id, text));
  }
  clients.add(res);
  req.on("close", () => {
    clients.delete(res);
    console.error(`client ${number} closed, ${clients.size} left`);
  });
}

function publish(req, res) {
  const chunks = [];
  let size = 0;
  req.on("data", (chunk) => {
    size += chunk.length;
    if (size > MAX_BODY) {
      answer(res, 413, { error: `body over ${MAX_BODY} bytes` });
      req.destroy();
      return;
    }
    chunks.push(chunk);
  });
  req.on("end", () => {
    if (size > MAX_BODY) return;
    const text = Buffer.concat(chunks).toString("utf8");
    lastId += 1;
    history.push([lastId, text]);
    if (history.length > HISTORY_SIZE) history.shift();
    const message = frame(lastId, text);
    for (const client of clients) client.write(message);
    answer(res, 202, { id: String(lastId) });
  });
}

const server = http.createServer((req, res) => {
  const path = new URL(req.url, "http://localhost").pathname;
  if (path !== "/chat") {
    answer(res, 404, { error: `no route ${path}` });
  } else if (req.method === "GET") {
    openStream(req, res);
  } else if (req.method === "POST") {
    publish(req, res);
  } else {
    answer(res, 405, { error: `${req.method} not allowed on /chat` });
  }
});

server.listen(0, "127.0.0.1", () => {
  console.error(`Running on http://127.0.0.1:${server.address().port}`);
});
process.on("SIGTERM", () => process.exit(0));
