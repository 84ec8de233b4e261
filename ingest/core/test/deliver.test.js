// Delivery and spool rules against a scripted HTTP server (no Vite): one request per build
// (the spooled events, oldest first, then this build's), 2xx deletes, 5xx/429/timeouts keep,
// 4xx moves to rejected/ with the answer, event by event.

import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';

import { deliver, errorText, preconnect, spoolDirFor } from 'shiplog-collector-core';
import { cleanupAll, tempDir } from '../../test-support/helpers.js';
import { parseAnswer } from '../src/http.js';

/** An HTTP server that answers each request with the next scripted [status, body]. */
async function scripted(script) {
  const seen = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      seen.push({ method: req.method, url: req.url, headers: req.headers, event: JSON.parse(body) });
      const [status, answer] = script.shift() || [202, { accepted: 1, duplicates: 0, rejected: [] }];
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(typeof answer === 'string' ? answer : JSON.stringify(answer));
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const { port } = /** @type {import('node:net').AddressInfo} */ (server.address());
  return {
    url: `http://127.0.0.1:${port}/`,
    seen,
    close: () => new Promise((r) => { server.closeAllConnections(); server.close(r); }),
  };
}

/** The ids of the events of one recorded request (one event or an array). */
const ids = (req) => (Array.isArray(req.event) ? req.event : [req.event]).map((e) => e.id);
const ev = (id) => ({ id, kind: 'build', source: 'vite-plugin', project: 'p', data: { success: true, duration_ms: 1 } });
const spooled = (dir) => (existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith('.json')) : []);

after(cleanupAll);

describe('delivery and spool', () => {
  it('posts to /v1/events with the bearer token and JSON content type', async () => {
    const s = await scripted([]);
    const dir = join(tempDir(), 'spool');
    const out = await deliver(ev('a'), { url: s.url, token: 'sekret', timeoutMs: 2000, spoolDir: dir });
    assert.equal(out.delivered, true);
    assert.equal(s.seen[0].method, 'POST');
    assert.equal(s.seen[0].url, '/v1/events');
    assert.equal(s.seen[0].headers.authorization, 'Bearer sekret');
    assert.equal(s.seen[0].headers['content-type'], 'application/json');
    assert.deepEqual(spooled(dir), []);
    await s.close();
  });

  it('sends the spooled events, oldest first, with the next build in one request; keeps them all on 5xx and 429', async () => {
    const dir = join(tempDir(), 'spool');
    const s = await scripted([
      [503, { error: 'log unavailable' }],
      [429, { error: 'slow down' }],
      [202, { accepted: 3, duplicates: 0, rejected: [] }],
    ]);
    const o = { url: s.url, timeoutMs: 2000, spoolDir: dir };
    const first = await deliver(ev('a'), o);
    assert.equal(first.spooled, true);
    assert.equal(first.spoolLeft, 1);
    await new Promise((r) => setTimeout(r, 2)); // distinct time prefixes
    const second = await deliver(ev('b'), o);
    assert.equal(second.spooled, true);
    assert.match(second.warning, /HTTP 429/);
    assert.equal(second.spoolLeft, 2);
    assert.deepEqual(s.seen.map(ids), [['a'], ['a', 'b']]);
    assert.equal(spooled(dir).length, 2);

    await new Promise((r) => setTimeout(r, 2));
    const third = await deliver(ev('c'), o);
    assert.deepEqual(ids(s.seen[2]), ['a', 'b', 'c'], 'oldest first, this build last');
    assert.equal(third.delivered, true);
    assert.equal(third.spoolSent, 2);
    assert.equal(third.spoolLeft, 0);
    assert.equal(s.seen.length, 3, 'one request per build');
    assert.deepEqual(spooled(dir), []);
    await s.close();
  });

  it('reads the answer event by event: a refused spooled event goes to rejected/, the others are stored', async () => {
    const dir = join(tempDir(), 'spool');
    const about = { field: '/project', error: 'is required' };
    const s = await scripted([
      [503, 'busy'],
      [503, 'busy'],
      [207, { accepted: 2, duplicates: 0, rejected: [{ index: 1, ...about }] }],
    ]);
    const o = { url: s.url, timeoutMs: 2000, spoolDir: dir };
    await deliver(ev('ok'), o);
    await new Promise((r) => setTimeout(r, 2));
    await deliver(ev('bad'), o);
    const out = await deliver(ev('new'), o);
    assert.deepEqual(ids(s.seen[2]), ['ok', 'bad', 'new']);
    assert.equal(out.delivered, true);
    assert.equal(out.spoolSent, 1);
    assert.equal(out.spoolRejected, 1);
    assert.deepEqual(spooled(dir), []);
    const rejected = readdirSync(join(dir, 'rejected'));
    const eventFile = rejected.find((f) => !f.endsWith('.answer.json'));
    assert.equal(JSON.parse(readFileSync(join(dir, 'rejected', eventFile), 'utf8')).id, 'bad');
    const saved = JSON.parse(readFileSync(join(dir, 'rejected', rejected.find((f) => f.endsWith('.answer.json'))), 'utf8'));
    assert.deepEqual(saved.answer, about, 'the words about that event, not the whole answer');
    await s.close();
  });

  it("sends this build's event alone when the batch is over the server's body limit (413); the spooled ones wait", async () => {
    const dir = join(tempDir(), 'spool');
    const s = await scripted([[503, 'busy'], [413, { error: 'body over the limit' }], [202, { accepted: 1, duplicates: 0, rejected: [] }]]);
    const o = { url: s.url, timeoutMs: 2000, spoolDir: dir };
    await deliver(ev('old'), o);
    const out = await deliver(ev('now'), o);
    assert.deepEqual(s.seen.slice(1).map(ids), [['old', 'now'], ['now']]);
    assert.equal(out.delivered, true);
    assert.equal(out.spoolLeft, 1);
    assert.equal(spooled(dir).length, 1);
    await s.close();
  });

  it('moves an event the server refuses (4xx) to rejected/ with the answer, and never retries it', async () => {
    const dir = join(tempDir(), 'spool');
    const answer = { accepted: 0, duplicates: 0, rejected: [{ index: 0, field: '/project', error: 'is required' }] };
    const s = await scripted([[400, answer]]);
    const o = { url: s.url, timeoutMs: 2000, spoolDir: dir };
    const out = await deliver(ev('bad'), o);
    assert.equal(out.rejected, true);
    assert.equal(out.spooled, false);
    assert.match(out.warning, /rejected/);
    assert.deepEqual(spooled(dir), []);
    const rejected = readdirSync(join(dir, 'rejected')).sort();
    assert.equal(rejected.length, 2);
    const answerFile = rejected.find((f) => f.endsWith('.answer.json'));
    const saved = JSON.parse(readFileSync(join(dir, 'rejected', answerFile), 'utf8'));
    assert.equal(saved.status, 400);
    assert.deepEqual(saved.answer, answer);
    const eventFile = rejected.find((f) => !f.endsWith('.answer.json'));
    assert.equal(JSON.parse(readFileSync(join(dir, 'rejected', eventFile), 'utf8')).id, 'bad');
    // Nothing of rejected/ is sent again.
    await deliver(ev('next'), o);
    assert.deepEqual(s.seen.map(ids), [['bad'], ['next']]);
    await s.close();
  });

  it("keeps this build's refused event in rejected/ too, and drops unreadable spool files there", async () => {
    const dir = join(tempDir(), 'spool');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, '000000000000001-garbage.json'), '{not json');
    const s = await scripted([[401, { error: 'unknown token' }]]);
    const out = await deliver(ev('x'), { url: s.url, token: 'wrong', timeoutMs: 2000, spoolDir: dir });
    assert.equal(out.rejected, true);
    assert.equal(out.spooled, false);
    assert.equal(out.spoolRejected, 1);
    assert.match(out.warning, /HTTP 401/);
    assert.equal(readdirSync(join(dir, 'rejected')).length, 4);
    assert.deepEqual(spooled(dir), []);
    await s.close();
  });

  it('bounds the whole delivery by timeoutMs and caps the spool size', async () => {
    const dir = join(tempDir(), 'spool');
    const server = http.createServer(() => {}); // never answers
    await new Promise((r) => server.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${/** @type {any} */ (server.address()).port}`;
    const t0 = Date.now();
    for (const id of ['1', '2', '3']) {
      const out = await deliver(ev(id), { url, timeoutMs: 300, spoolDir: dir, maxSpoolFiles: 2 });
      assert.equal(out.spooled, true);
      await new Promise((r) => setTimeout(r, 2));
    }
    const ms = Date.now() - t0;
    assert.ok(ms < 3 * 300 + 1000, `three deliveries took ${ms} ms`);
    const ids = spooled(dir).map((f) => JSON.parse(readFileSync(join(dir, f), 'utf8')).id);
    assert.deepEqual(ids, ['2', '3'], 'the oldest is dropped past maxSpoolFiles');
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });
});

/**
 * A raw HTTP server that counts connections and answers 202 to each whole request;
 * `onConnection(n, socket)` may break connection n (0-based) instead.
 */
async function counting(onConnection = () => false) {
  const state = { connections: 0, requests: 0 };
  const server = net.createServer((socket) => {
    const n = state.connections++;
    socket.on('error', () => {});
    if (onConnection(n, socket)) return;
    let text = '';
    socket.on('data', (c) => {
      text += c;
      const head = text.indexOf('\r\n\r\n');
      const length = Number(/content-length: *(\d+)/i.exec(text)?.[1] ?? -1);
      if (head < 0 || Buffer.byteLength(text.slice(head + 4)) < length) return;
      state.requests++;
      const body = JSON.stringify({ accepted: 1, duplicates: 0, rejected: [] });
      socket.end(`HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n${body}`);
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${/** @type {any} */ (server.address()).port}`,
    state,
    close: () => new Promise((r) => server.close(r)),
  };
}

const until = async (cond) => {
  for (let i = 0; i < 200 && !cond(); i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok(cond(), 'waited 2 s');
};

describe('connection opened when the build starts', () => {
  it("sends the build's request on the connection preconnect() opened", async () => {
    const s = await counting();
    preconnect(s.url);
    await until(() => s.state.connections === 1);
    const out = await deliver(ev('warm'), { url: s.url, timeoutMs: 2000, spoolDir: join(tempDir(), 'spool') });
    assert.equal(out.delivered, true, out.warning);
    assert.deepEqual(s.state, { connections: 1, requests: 1 });
    await s.close();
  });

  it('opens a new connection when the server closed the pre-opened one meanwhile', async () => {
    const s = await counting((n, socket) => n === 0 && (socket.end(), true));
    preconnect(s.url);
    await until(() => s.state.connections === 1);
    await new Promise((r) => setTimeout(r, 100)); // the close reaches the client
    const out = await deliver(ev('closed'), { url: s.url, timeoutMs: 2000, spoolDir: join(tempDir(), 'spool') });
    assert.equal(out.delivered, true, out.warning);
    assert.deepEqual(s.state, { connections: 2, requests: 1 });
    await s.close();
  });

  it('sends once more on a new connection when the pre-opened one breaks under the request', async () => {
    const s = await counting((n, socket) => n === 0 && (socket.once('data', () => socket.destroy()), true));
    preconnect(s.url);
    await until(() => s.state.connections === 1);
    const dir = join(tempDir(), 'spool');
    const out = await deliver(ev('broken'), { url: s.url, timeoutMs: 2000, spoolDir: dir });
    assert.equal(out.delivered, true, out.warning);
    assert.deepEqual(s.state, { connections: 2, requests: 1 });
    assert.deepEqual(spooled(dir), []);
    await s.close();
  });

  it('spools as before when the server cannot be reached', async () => {
    const s = await counting();
    const url = s.url;
    await s.close();
    preconnect(url);
    await new Promise((r) => setTimeout(r, 50));
    const dir = join(tempDir(), 'spool');
    const out = await deliver(ev('down'), { url, timeoutMs: 2000, spoolDir: dir });
    assert.equal(out.spooled, true);
    assert.match(out.warning, /ECONNREFUSED/);
    assert.equal(spooled(dir).length, 1);
  });
});

describe('reading the answer', () => {
  const b = (s) => Buffer.from(s, 'utf8');
  it('reads a body by content-length, and waits while it is not whole', () => {
    const part = 'HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: 14\r\n\r\n{"accepted":';
    assert.equal(parseAnswer(b(part), false), null);
    assert.equal(parseAnswer(b(part), true), null, 'a short body is not an answer, even at the end');
    assert.equal(parseAnswer(b('HTTP/1.1 202 Accepted\r\nContent-Le'), false), null);
    assert.deepEqual(parseAnswer(b(`${part}1}`), false), { status: 202, answer: '{"accepted":1}' });
    assert.deepEqual(parseAnswer(b('HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\n\r\n{}'), false), { status: 202, answer: '{}' });
    const utf8 = 'é€';
    assert.deepEqual(parseAnswer(b(`HTTP/1.1 400 Bad\r\nContent-Length: ${Buffer.byteLength(utf8)}\r\n\r\n${utf8}`), false), { status: 400, answer: utf8 });
  });

  it('reads a chunked body (chunk extensions and trailers too)', () => {
    const head = 'HTTP/1.1 207 Multi-Status\r\ntransfer-encoding: chunked\r\n\r\n';
    assert.equal(parseAnswer(b(`${head}4\r\n{"a"\r\n`), false), null);
    assert.equal(parseAnswer(b(`${head}4\r\n{"a"\r\n3;x=y\r\n:1}\r\n0\r\n`), false), null);
    assert.deepEqual(parseAnswer(b(`${head}4\r\n{"a"\r\n3;x=y\r\n:1}\r\n0\r\n\r\n`), false), { status: 207, answer: '{"a":1}' });
    assert.deepEqual(parseAnswer(b(`${head}2\r\n{}\r\n0\r\nx-t: 1\r\n\r\n`), false), { status: 207, answer: '{}' });
    assert.throws(() => parseAnswer(b(`${head}zz\r\n`), false), /chunk size/);
  });

  it('skips interim 1xx answers, reads to the end without a length, and refuses what is not HTTP', () => {
    assert.deepEqual(parseAnswer(b('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n'), false), { status: 201, answer: '' });
    assert.equal(parseAnswer(b('HTTP/1.0 503 Busy\r\n\r\nlater'), false), null);
    assert.deepEqual(parseAnswer(b('HTTP/1.0 503 Busy\r\n\r\nlater'), true), { status: 503, answer: 'later' });
    assert.deepEqual(parseAnswer(b('HTTP/1.1 204 No Content\r\n\r\n'), false), { status: 204, answer: '' });
    assert.throws(() => parseAnswer(b('SSH-2.0-OpenSSH\r\n\r\n'), false), /status line/);
  });
});

describe('event fields', () => {
  it('cuts the error to 2 KB of UTF-8 without colours', () => {
    const long = `\u001b[31m[PARSE_ERROR]\u001b[0m ${'é'.repeat(3000)}`;
    const t = errorText(new Error(long));
    assert.ok(Buffer.byteLength(t) <= 2048);
    assert.ok(t.startsWith('[PARSE_ERROR] éé'));
    assert.equal(errorText('plain'), 'plain');
  });

  it('puts the spool in node_modules/.cache when there is one', () => {
    const root = tempDir();
    assert.equal(spoolDirFor({}, root), join(root, '.shiplog-spool'));
    mkdirSync(join(root, 'node_modules'));
    assert.equal(spoolDirFor({}, root), join(root, 'node_modules', '.cache', 'shiplog'));
    assert.equal(spoolDirFor({ spoolDir: 'x/y' }, root), join(root, 'x', 'y'));
  });
});
