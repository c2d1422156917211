// Loads the demo page in headless Debian Chromium and uses it as a person would: waits for the
// connection, sends a text and a binary message with the page's own controls, watches the live
// chart update, and saves a screenshot. Then, on a server of its own, it checks that the page
// shows a restart (closed with code 1001) and reconnects by itself, and that the page served
// over https:// talks wss:// to a TLS server.
//
// Run by run.sh, which starts the server. Environment:
//   WSREACTOR_URL  base URL of a running server (default http://127.0.0.1:9001)
//   WSREACTOR_BIN  the server binary, for the restart test (skipped without it)
//   SCREENSHOT     where to save the PNG (default ../../docs/page.png)
//   CHROMIUM       browser executable (default /usr/bin/chromium)
//   TLS_CERT, TLS_KEY  a certificate and key for 127.0.0.1, for the https test (skipped
//                  without them; the certificate is self-signed, so certificate errors are
//                  ignored by this browser)

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const BASE = process.env.WSREACTOR_URL ?? 'http://127.0.0.1:9001';
const SCREENSHOT = resolve(process.env.SCREENSHOT ?? join(here, '..', '..', 'docs', 'page.png'));
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const BIN = process.env.WSREACTOR_BIN;
const TLS_CERT = process.env.TLS_CERT;
const TLS_KEY = process.env.TLS_KEY;
const WAIT = 15_000;

let context;
let profile;

before(async () => {
  profile = mkdtempSync(join(tmpdir(), 'wsreactor-chromium-'));
  context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    viewport: { width: 1280, height: 900 },
    // For the https test's self-signed certificate.
    ignoreHTTPSErrors: true,
  });
});

after(async () => {
  await context?.close();
  if (profile) rmSync(profile, { recursive: true, force: true });
});

/** In `page`, opens a socket to /echo on the page's own server, sends `count` JSON-like
 * messages that repeat (so a kept window shows), checks every echo, and returns the
 * extensions the browser negotiated. */
function compressedEchoes(page, count) {
  return page.evaluate(async (count) => {
    const base = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}`;
    const ws = new WebSocket(`${base}/echo`);
    await new Promise((resolve, reject) => {
      ws.onopen = resolve;
      ws.onerror = () => reject(new Error('socket error'));
    });
    for (let i = 0; i < count; i++) {
      const text = JSON.stringify({ seq: i, rows: Array.from({ length: 50 }, (_, k) => ({ id: k, name: `row ${k % 7}` })) });
      const echo = new Promise((resolve) => { ws.onmessage = (event) => resolve(event.data); });
      ws.send(text);
      if ((await echo) !== text) throw new Error(`echo ${i} differs`);
    }
    const extensions = ws.extensions;
    ws.close(1000);
    return extensions;
  }, count);
}

describe('demo page in Chromium', () => {
  let page;
  const pageErrors = [];
  const consoleErrors = [];

  before(async () => {
    page = context.pages()[0] ?? (await context.newPage());
    page.on('pageerror', (error) => pageErrors.push(String(error)));
    page.on('console', (message) => {
      if (message.type() === 'error') consoleErrors.push(message.text());
    });
  });

  it('loads / and shows both sockets as open', async () => {
    const response = await page.goto(`${BASE}/`);
    assert.equal(response.status(), 200);
    assert.match(response.headers()['content-type'], /^text\/html/);
    assert.equal(await page.title(), 'wsreactor');
    await page.locator('#state[data-state="open"]').waitFor({ timeout: WAIT });
    assert.equal(await page.locator('#state').textContent(), 'open');
    await page.locator('#stats-state[data-state="open"]').waitFor({ timeout: WAIT });
  });

  it('echoes a text message typed into the page', async () => {
    const text = `hello from chromium ${Date.now()}`;
    await page.fill('#message', text);
    await page.click('#send-text');
    const reply = page.locator('#log li.reply[data-kind="text"]', { hasText: text });
    await reply.waitFor({ timeout: WAIT });
    assert.match(await reply.locator('.rtt').textContent(), /^\d+(\.\d+)? ms$/);
  });

  it('negotiates permessage-deflate (the binary default: no context takeover)', async () => {
    const extensions = await compressedEchoes(page, 10);
    assert.equal(extensions, 'permessage-deflate; server_no_context_takeover; client_no_context_takeover');
  });

  it('echoes a binary message', async () => {
    await page.fill('#message', 'bytes: é✓');
    await page.click('#send-binary');
    const reply = page.locator('#log li.reply[data-kind="binary"]').first();
    await reply.waitFor({ timeout: WAIT });
    const body = await reply.locator('.body').textContent();
    // 'bytes: é✓' is 12 bytes of UTF-8, starting 62 79 74 65 73.
    assert.match(body, /^12 B: 62 79 74 65 73 3a/);
    assert.match(body, /“bytes: é✓”/);
    assert.match(await reply.locator('.rtt').textContent(), /ms$/);
  });

  it('draws the live chart from server pushes, at least twice', async () => {
    const updates = async () => Number(await page.locator('#chart').getAttribute('data-updates'));
    const start = await updates();
    // Bursts of echo traffic over several pushes, for the chart to have something to show.
    for (let i = 1; i <= 5; i += 1) {
      for (let b = 0; b < i % 3 + 1; b += 1) {
        await page.click('#send-burst');
        await page.locator('#log li.burst').first().and(page.locator('[data-done="true"]')).waitFor({ timeout: WAIT });
      }
      await page.waitForFunction(
        (n) => Number(document.getElementById('chart').dataset.updates) >= n,
        start + i,
        { timeout: WAIT },
      );
    }
    assert.ok((await updates()) >= start + 5);
    // Both of the page's sockets are open on the server, and it says so.
    const open = Number(await page.locator('#open').textContent());
    assert.ok(open >= 2, `open connections shown: ${open}`);
    assert.match(await page.locator('#uptime').textContent(), /\d+s$/);
    assert.match(await page.locator('#interval').textContent(), /^\d+ ms$/);
    // The closes table is filled from the same push: refusals by status, closes by reason.
    assert.match(await page.locator('#refusals').textContent(), /^400: \d+ · 403: \d+ · 426: \d+ · 431: \d+ · limit: \d+$/);
    assert.match(await page.locator('#close-peer').textContent(), /^\d[\d,]*$/);
    assert.match(await page.locator('#backpressure').textContent(), /^\d[\d,]*$/);
  });

  it('saves a screenshot', async () => {
    // A person's last messages on top of the log.
    await page.fill('#message', 'Hello, reactor!');
    await page.click('#send-text');
    await page.click('#send-binary');
    await page.locator('#log li.reply[data-kind="binary"]', { hasText: 'Hello, reactor!' }).waitFor({ timeout: WAIT });
    mkdirSync(dirname(SCREENSHOT), { recursive: true });
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
    console.log(`screenshot: ${SCREENSHOT}`);
  });

  it('ran without script errors', () => {
    assert.deepEqual(pageErrors, []);
    assert.deepEqual(consoleErrors, []);
  });
});

/** Waits until the page shows its echo socket and its stats socket open. */
async function bothSocketsOpen(page) {
  await page.locator('#state[data-state="open"]').waitFor({ timeout: WAIT });
  await page.locator('#stats-state[data-state="open"]').waitFor({ timeout: WAIT });
}

/** Waits until the live chart has drawn one more push than it had. */
async function nextPush(page) {
  const before = Number(await page.locator('#chart').getAttribute('data-updates'));
  await page.waitForFunction(
    (n) => Number(document.getElementById('chart').dataset.updates) > n,
    before,
    { timeout: WAIT },
  );
}

/** Starts the server binary on `listen`; resolves with the child and the address it bound. */
function startServer(listen, extra = []) {
  return new Promise((resolveStart, reject) => {
    const child = spawn(BIN, ['--listen', listen, '--close-timeout-ms', '1000', ...extra], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`server did not start: ${stderr}`));
    }, 10_000);
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk) => {
      stderr += chunk;
      const match = /^wsreactor: listening on (\S+)$/m.exec(stderr);
      if (match) {
        clearTimeout(timer);
        resolveStart({ child, addr: match[1] });
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited (${code}): ${stderr}`));
    });
  });
}

describe('page across a server restart', { skip: BIN ? false : 'WSREACTOR_BIN not set' }, () => {
  let server = null;

  after(() => {
    if (server && server.child.exitCode === null) server.child.kill('SIGKILL');
  });

  it('shows the close code, then reconnects by itself', async () => {
    server = await startServer('127.0.0.1:0');
    const { addr } = server;
    const page = await context.newPage();
    await page.goto(`http://${addr}/`);
    await page.locator('#state[data-state="open"]').waitFor({ timeout: WAIT });
    await page.locator('#stats-state[data-state="open"]').waitFor({ timeout: WAIT });

    // A graceful stop: the server says 1001 to every client.
    const exited = once(server.child, 'exit');
    server.child.kill('SIGTERM');
    await exited;
    await page.locator('#state[data-state="closed"]').waitFor({ timeout: WAIT });
    const detail = await page.locator('#state-detail').textContent();
    assert.match(detail, /code 1001/);
    assert.match(detail, /reconnecting in \d+\.\d s/);

    // Back on the same port: both sockets come back without a reload.
    server = await startServer(addr);
    await bothSocketsOpen(page);
    await nextPush(page);
    await page.close();
    server.child.kill('SIGTERM');
    await once(server.child, 'exit');
  });
});

describe('page on a server taking context over', { skip: BIN ? false : 'WSREACTOR_BIN not set' }, () => {
  let server = null;

  after(() => {
    if (server && server.child.exitCode === null) server.child.kill('SIGKILL');
  });

  it('keeps both streams across messages with Chromium', async () => {
    server = await startServer('127.0.0.1:0', ['--compression', 'context-takeover', '--compression-live', '0']);
    const page = await context.newPage();
    await page.goto(`http://${server.addr}/`);
    await bothSocketsOpen(page);
    // Chromium offers client_max_window_bits and both takeovers; with nothing kept live, every
    // message also resumes from its window.
    assert.equal(await compressedEchoes(page, 30), 'permessage-deflate; client_max_window_bits=15');
    await page.close();
    server.child.kill('SIGTERM');
    await once(server.child, 'exit');
  });
});

describe('page over https', { skip: BIN && TLS_CERT && TLS_KEY ? false : 'WSREACTOR_BIN, TLS_CERT or TLS_KEY not set' }, () => {
  let server = null;

  after(() => {
    if (server && server.child.exitCode === null) server.child.kill('SIGKILL');
  });

  it('is served over TLS and its sockets use wss://', async () => {
    server = await startServer('127.0.0.1:0', ['--tls-cert', TLS_CERT, '--tls-key', TLS_KEY]);
    const page = await context.newPage();
    const response = await page.goto(`https://${server.addr}/`);
    assert.equal(response.status(), 200);
    assert.equal((await response.securityDetails())?.protocol, 'TLS 1.3');
    await bothSocketsOpen(page);
    const text = `over tls ${Date.now()}`;
    await page.fill('#message', text);
    await page.click('#send-text');
    await page.locator('#log li.reply[data-kind="text"]', { hasText: text }).waitFor({ timeout: WAIT });
    // Plain ws:// from an https:// page would be blocked as mixed content: the echo above
    // came back over wss://. The push arrives over the same TLS server.
    await nextPush(page);
    await page.close();
    server.child.kill('SIGTERM');
    await once(server.child, 'exit');
  });
});

describe('chat panel in a room', () => {
  it('two pages in one room see each other’s messages and the member count', async () => {
    const room = `room-${Date.now()}`;
    const pages = [await context.newPage(), await context.newPage()];
    const names = ['alice', 'bob'];
    for (const [i, page] of pages.entries()) {
      await page.goto(`${BASE}/`);
      await page.locator('#stats-state[data-state="open"]').waitFor({ timeout: WAIT });
      await page.fill('#chat-room', room);
      await page.fill('#chat-nick', names[i]);
      await page.click('#chat-join-button');
      await page.locator('#chat-state[data-state="open"]').waitFor({ timeout: WAIT });
    }
    // Both members, as the next stats push counts them, on both pages.
    for (const page of pages) {
      await page.waitForFunction(
        () => document.getElementById('chat-members').textContent === '2',
        null,
        { timeout: WAIT },
      );
    }
    for (const [i, page] of pages.entries()) {
      const text = `hello from ${names[i]} ${Date.now()}`;
      await page.fill('#chat-message', text);
      await page.click('#chat-send');
      // The sender sees its own line (the room includes it), and so does the other page.
      for (const other of pages) {
        const line = other.locator('#chat-log li', { hasText: text });
        await line.waitFor({ timeout: WAIT });
        assert.equal(await line.locator('.from').textContent(), names[i]);
      }
    }
    // One leaves: the other page's count drops to 1 with a later push.
    await pages[1].click('#chat-leave');
    await pages[0].waitForFunction(
      () => document.getElementById('chat-members').textContent === '1',
      null,
      { timeout: WAIT },
    );
    for (const page of pages) await page.close();
  });
});
