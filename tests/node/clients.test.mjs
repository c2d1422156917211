// Node's `ws` client (the most used WebSocket client in Node) against the shipped wsreactor
// binary: over wss:// (rustls, a certificate this run made, verified by the client against it)
// and over ws://, each with and without permessage-deflate. Every echo is compared byte for
// byte; sizes cross every frame-length boundary up to 1 MiB; 1,000 messages in flight keep
// their order.
//
// Run by run.sh, which builds the binary and makes the certificate:
//   WSREACTOR_BIN=... TLS_CERT=... TLS_KEY=... node --test clients.test.mjs
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import WebSocket from "ws";

const bin = process.env.WSREACTOR_BIN;
const cert = process.env.TLS_CERT;
const key = process.env.TLS_KEY;
const servers = [];

/** Starts the binary on a free port and resolves with the address it printed. */
function startServer(args) {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, ["--listen", "127.0.0.1:0", ...args], {
      stdio: ["ignore", "ignore", "pipe"],
    });
    servers.push(child);
    let stderr = "";
    const timer = setTimeout(() => reject(new Error(`no address: ${stderr}`)), 10_000);
    child.stderr.on("data", (chunk) => {
      stderr += chunk;
      const match = /^wsreactor: listening on (\S+)$/m.exec(stderr);
      if (match) {
        clearTimeout(timer);
        resolve(match[1]);
      }
    });
    child.on("error", reject);
    child.on("exit", (code) => reject(new Error(`server exited (${code}): ${stderr}`)));
  });
}

let tlsAddr;
let plainAddr;
let takeoverAddr;
before(async () => {
  assert.ok(bin && cert && key, "WSREACTOR_BIN, TLS_CERT and TLS_KEY must be set (run.sh)");
  tlsAddr = await startServer(["--tls-cert", cert, "--tls-key", key]);
  plainAddr = await startServer([]);
  // One live compressor per reactor for three connections: streams resume from windows too.
  takeoverAddr = await startServer([
    "--compression", "context-takeover", "--compression-live", "1", "--threads", "1",
  ]);
});
after(() => {
  for (const child of servers) child.kill("SIGTERM");
});

function open(url, perMessageDeflate) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { perMessageDeflate, ca: readFileSync(cert) });
    ws.binaryType = "nodebuffer";
    ws.once("open", () => resolve(ws));
    ws.once("error", reject);
  });
}

/** Sends every message at once, then checks the echoes arrive equal and in order. */
function echoAll(ws, messages) {
  return new Promise((resolve, reject) => {
    let next = 0;
    ws.on("message", (data, isBinary) => {
      const sent = messages[next];
      try {
        assert.equal(isBinary, typeof sent !== "string", `message ${next}: kind`);
        if (isBinary) assert.ok(Buffer.compare(data, sent) === 0, `message ${next}: bytes`);
        else assert.equal(data.toString("utf8"), sent, `message ${next}: text`);
      } catch (e) {
        reject(e);
        return;
      }
      next += 1;
      if (next === messages.length) resolve();
    });
    ws.once("error", reject);
    ws.once("close", (code) => next < messages.length && reject(new Error(`closed ${code}`)));
    for (const m of messages) ws.send(m);
  });
}

const sizes = [0, 1, 125, 126, 127, 65_535, 65_536, 65_537, 1 << 20];
const messages = () => [
  ...sizes.map((n) => randomBytes(n)),
  ...sizes.map((n) => "ä€𝄞x".repeat(Math.ceil(n / 10)).slice(0, n)),
  "a".repeat(200_000), // compresses well: the deflate path's large case
];

for (const scheme of ["wss", "ws"]) {
  for (const deflate of [true, false]) {
    test(`${scheme}://, permessage-deflate ${deflate ? "offered" : "off"}`, async () => {
      const addr = scheme === "wss" ? tlsAddr : plainAddr;
      const ws = await open(`${scheme}://${addr}/`, deflate);
      const extensions = ws.extensions;
      if (deflate) assert.match(extensions, /permessage-deflate/, "negotiated");
      else assert.equal(extensions, "");
      await echoAll(ws, messages());
      const small = Array.from({ length: 1000 }, (_, i) => `message ${i}`);
      await echoAll(ws, small);
      const closed = new Promise((resolve) => ws.once("close", (code) => resolve(code)));
      ws.close(1000, "done");
      assert.equal(await closed, 1000);
    });
  }
}

// ws offers context takeover both ways (and client_max_window_bits): the server takes it,
// so each connection's streams carry over between messages, in both directions.
test("ws://, permessage-deflate with context takeover, three connections interleaved", async () => {
  const answers = [];
  const sockets = await Promise.all(
    [0, 1, 2].map(
      () =>
        new Promise((resolve, reject) => {
          const ws = new WebSocket(`ws://${takeoverAddr}/`, { perMessageDeflate: true });
          ws.binaryType = "nodebuffer";
          ws.once("upgrade", (res) => answers.push(res.headers["sec-websocket-extensions"]));
          ws.once("open", () => resolve(ws));
          ws.once("error", reject);
        }),
    ),
  );
  // Neither no_context_takeover: both directions carry over.
  assert.deepEqual(answers, Array(3).fill("permessage-deflate; client_max_window_bits=15"));
  const json = (i, c) =>
    JSON.stringify({ conn: c, seq: i, rows: Array.from({ length: 40 + (i % 7) * 30 }, (_, k) => ({
      id: (k * 7919 + i) % 1009, name: `item-${k % 37}`, price: ((k * 13) % 1000) / 10,
    })) });
  for (let round = 0; round < 20; round++) {
    await Promise.all(sockets.map((ws, c) => echoAll(ws, [json(round, c), json(round + 1, c)])));
    for (const ws of sockets) {
      for (const event of ["message", "error", "close"]) ws.removeAllListeners(event);
    }
  }
  await Promise.all(sockets.map((ws) => echoAll(ws, messages())));
  for (const ws of sockets) {
    const closed = new Promise((resolve) => ws.once("close", (code) => resolve(code)));
    ws.close(1000, "done");
    assert.equal(await closed, 1000);
  }
});
