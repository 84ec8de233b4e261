// Test helpers every collector package's tests share: a real shiplog server (the binary
// built by cargo), temp folders, servers that refuse or never answer, files on disk.

import { spawn, execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';

import { ciProviders } from 'shiplog-collector-core';

/** The ingest/ folder (the npm workspace). */
export const INGEST_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** The shiplog binary: SHIPLOG_BIN, else ../../target/debug/shiplog. */
export function shiplogBin() {
  const bin = process.env.SHIPLOG_BIN || resolve(INGEST_DIR, '..', 'target', 'debug', 'shiplog');
  if (!existsSync(bin)) {
    throw new Error(
      `shiplog binary not found at ${bin}: build it first (cd ${resolve(INGEST_DIR, '..')} && cargo build -p shiplog) or set SHIPLOG_BIN`,
    );
  }
  return bin;
}

const cleanups = [];

/** A fresh temp folder, removed by cleanupAll(). */
export function tempDir(prefix = 'shiplog-vite-') {
  const d = mkdtempSync(join(tmpdir(), prefix));
  cleanups.push(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

export async function cleanupAll() {
  while (cleanups.length) {
    try {
      await cleanups.pop()();
    } catch {
      /* keep cleaning */
    }
  }
}

/**
 * Starts `shiplog serve` on a free port; resolves once it prints its URL.
 * @returns {Promise<{url: string, dataDir: string, stop: () => Promise<void>}>}
 */
export async function startServer(dataDir = tempDir('shiplog-data-'), extraArgs = []) {
  const bin = shiplogBin();
  const child = spawn(bin, ['serve', '--data-dir', dataDir, '--listen', '127.0.0.1:0', ...extraArgs], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'warn' },
  });
  let stderr = '';
  child.stderr.on('data', (b) => (stderr += b));
  const url = await new Promise((resolveUrl, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`shiplog did not start within 15 s; stderr:\n${stderr}`)), 15000);
    child.stdout.on('data', (b) => {
      out += b;
      const m = out.match(/listening on (http:\/\/[^\s]+)/);
      if (m) {
        clearTimeout(timer);
        resolveUrl(m[1].replace(/\/+$/, ''));
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`shiplog exited with ${code} before listening; stderr:\n${stderr}`));
    });
  });
  child.stdout.resume();
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    if (child.exitCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    const t = setTimeout(() => child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(t);
  };
  cleanups.push(stop);
  return { url, dataDir, stop };
}

/** A port on 127.0.0.1 where nothing listens (connection refused). */
export async function closedPort() {
  const srv = net.createServer();
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = /** @type {net.AddressInfo} */ (srv.address());
  await new Promise((r) => srv.close(r));
  return port;
}

/** A TCP server that accepts connections and never answers. */
export async function blackhole() {
  const sockets = new Set();
  let connections = 0;
  const srv = net.createServer((s) => {
    connections++;
    sockets.add(s);
    s.on('error', () => {});
    s.on('close', () => sockets.delete(s));
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = /** @type {net.AddressInfo} */ (srv.address());
  const stop = async () => {
    for (const s of sockets) s.destroy();
    await new Promise((r) => srv.close(r));
  };
  cleanups.push(stop);
  return { url: `http://127.0.0.1:${port}`, connections: () => connections, stop };
}

/**
 * Server counters from GET /metrics, on a connection of its own: a kept-alive socket that
 * the server closed while idle (between a benchmark's builds) would fail the request.
 */
export async function serverCounters(url) {
  const text = await (await fetch(`${url}/metrics`, { headers: { connection: 'close' } })).text();
  const get = (name) => {
    const m = text.match(new RegExp(`^${name} (\\d+)`, 'm'));
    return m ? Number(m[1]) : NaN;
  };
  return {
    accepted: get('shiplog_events_accepted_total'),
    duplicates: get('shiplog_events_duplicate_total'),
    rejected: get('shiplog_events_rejected_total'),
  };
}

/** Re-posts an event: the server's answer says whether it already holds it. */
export async function repost(url, event) {
  const res = await fetch(`${url}/v1/events`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(event),
  });
  return { status: res.status, body: await res.json() };
}

/**
 * Runs SQL on the query API; throws when the server has none (404/405) or refuses.
 * @returns {Promise<{columns: string[], rows: any[][]} | null>}
 */
export async function query(url, sql) {
  const res = await fetch(`${url}/v1/query`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ sql }),
  });
  if (res.status === 404 || res.status === 405) throw new Error(`no query API at ${url}: HTTP ${res.status}`);
  const body = await res.text();
  if (!res.ok) throw new Error(`query failed: HTTP ${res.status}: ${body}`);
  return JSON.parse(body);
}

/** A copy of a fixture app in a temp folder (for builds that change its sources). */
export function fixtureCopy(fixture) {
  const d = tempDir('shiplog-fixture-');
  cpSync(fixture, d, { recursive: true });
  return d;
}

/** Adds a module with a syntax error, imported by src/main.js. */
export function breakFixture(root) {
  writeFileSync(join(root, 'src', 'broken.js'), 'export const answer = ;\n');
  const main = join(root, 'src', 'main.js');
  writeFileSync(main, `import './broken.js';\n${readFileSync(main, 'utf8')}`);
}

/** Every file under dir: { 'assets/x.js': bytes }. */
export function filesOnDisk(dir) {
  const out = {};
  const walk = (d) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else out[relative(dir, p).split('\\').join('/')] = statSync(p).size;
    }
  };
  walk(dir);
  return out;
}

export function gzipSizeOf(path) {
  return gzipSync(readFileSync(path)).length;
}

/** The HEAD commit of the repository holding dir, or null. */
export function gitHead(dir) {
  try {
    return execFileSync('git', ['rev-parse', 'HEAD'], { cwd: dir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return null;
  }
}

/** A Vite logger that records every line (Vite's Logger interface). */
export function captureLogger() {
  const lines = [];
  const warned = new Set();
  const logger = {
    lines,
    hasWarned: false,
    info: (msg) => {
      lines.push({ level: 'info', msg });
    },
    warn: (msg) => {
      logger.hasWarned = true;
      lines.push({ level: 'warn', msg });
    },
    warnOnce: (msg) => {
      if (warned.has(msg)) return;
      warned.add(msg);
      logger.warn(msg);
    },
    error: (msg) => {
      lines.push({ level: 'error', msg });
    },
    clearScreen: () => {},
    hasErrorLogged: () => false,
    shiplog: () => lines.filter((l) => String(l.msg).includes('[shiplog]')),
  };
  return logger;
}

/** Variables that would change the event (every one the CI table reads, SHIPLOG_*): removed for the tests, restored after. */
const CI_VARS = [
  ...new Set([
    'CI',
    'SHIPLOG_URL', 'SHIPLOG_TOKEN', 'SHIPLOG_PROJECT', 'SHIPLOG_ENV', 'SHIPLOG_DISABLED', 'SHIPLOG_COMMIT', 'SHIPLOG_BRANCH',
    ...ciProviders().flatMap((p) => [p.detect.var, ...JSON.stringify(p).matchAll(/\{([A-Z0-9_]+)/g)].map((m) => (typeof m === 'string' ? m : m[1]))),
  ]),
];

export function isolateEnv() {
  const saved = {};
  for (const k of CI_VARS) {
    saved[k] = process.env[k];
    delete process.env[k];
  }
  return () => {
    for (const k of CI_VARS) {
      if (saved[k] === undefined) delete process.env[k];
      else process.env[k] = saved[k];
    }
  };
}

/** Sets env variables for the duration of fn. */
export async function withEnv(vars, fn) {
  const saved = {};
  for (const [k, v] of Object.entries(vars)) {
    saved[k] = process.env[k];
    process.env[k] = v;
  }
  try {
    return await fn();
  } finally {
    for (const k of Object.keys(vars)) {
      if (saved[k] === undefined) delete process.env[k];
      else process.env[k] = saved[k];
    }
  }
}
