// Delivery: POST /v1/events with node:http(s) (not the global fetch: loading undici costs a
// build about 40 ms and 30 MiB), every spooled event first, all within one time budget.
// Whatever cannot be delivered is spooled to disk (one file per event, written atomically)
// and sent by the next build; events the server rejects (4xx) go to rejected/ with its answer.

import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { isAbsolute, join, resolve } from 'node:path';

import { oneLine } from './event.js';

const DEFAULT_MAX_SPOOL_FILES = 1000;
/** At most this many spooled events are sent per build (the rest wait for the next one). */
const MAX_SPOOLED_PER_BUILD = 200;


/**
 * The spool folder: `spoolDir` (relative to the project root), else
 * `node_modules/.cache/shiplog` when the root has a node_modules, else `.shiplog-spool`.
 */
export function spoolDirFor(opts, root) {
  if (opts.spoolDir) return isAbsolute(opts.spoolDir) ? opts.spoolDir : resolve(root, opts.spoolDir);
  if (existsSync(join(root, 'node_modules'))) return join(root, 'node_modules', '.cache', 'shiplog');
  return join(root, '.shiplog-spool');
}

/**
 * Sends the spooled events (oldest first), then `event`. Never throws.
 * Everything together is bounded by `timeoutMs`.
 * @param {BuildEvent} event
 * @param {{url: string, token?: string, timeoutMs: number, spoolDir: string, maxSpoolFiles?: number, userAgent?: string}} o
 * @returns {Promise<import('./index.d.ts').DeliveryOutcome>}
 */
export async function deliver(event, o) {
  const deadline = Date.now() + o.timeoutMs;
  const endpoint = `${o.url.replace(/\/+$/, '')}/v1/events`;
  /** @type {import('./index.d.ts').DeliveryOutcome} */
  const outcome = {
    delivered: false,
    spooled: false,
    rejected: false,
    spoolSent: 0,
    spoolRejected: 0,
    spoolLeft: 0,
    status: null,
    summary: '',
    warning: null,
  };
  const problems = [];
  let down = null; // why the server cannot take events now

  try {
    // 1. Spooled events, oldest first.
    const files = listSpool(o.spoolDir);
    for (const file of files.slice(0, MAX_SPOOLED_PER_BUILD)) {
      if (down) break;
      const path = join(o.spoolDir, file);
      let body;
      try {
        body = readFileSync(path, 'utf8');
        JSON.parse(body);
      } catch (e) {
        if (e && e.code === 'ENOENT') continue; // another build sent it meanwhile
        moveToRejected(o.spoolDir, file, { status: null, error: `unreadable spool file: ${oneLine(e)}` });
        outcome.spoolRejected++;
        continue;
      }
      const r = await post(endpoint, body, o.token, deadline, o.userAgent);
      if (r.kind === 'ok') {
        rmSync(path, { force: true });
        outcome.spoolSent++;
      } else if (r.kind === 'rejected') {
        moveToRejected(o.spoolDir, file, { status: r.status, answer: r.answer });
        outcome.spoolRejected++;
      } else {
        down = r.reason;
      }
    }

    // 2. This build's event.
    const body = JSON.stringify(event);
    if (!down) {
      const r = await post(endpoint, body, o.token, deadline, o.userAgent);
      outcome.status = r.status ?? null;
      if (r.kind === 'ok') outcome.delivered = true;
      else if (r.kind === 'rejected') {
        outcome.rejected = true;
        const file = spoolFileName(event);
        try {
          mkdirSync(join(o.spoolDir, 'rejected'), { recursive: true });
          writeFileSync(join(o.spoolDir, 'rejected', file), body);
          writeAnswer(o.spoolDir, file, { status: r.status, answer: r.answer });
        } catch {
          /* best effort */
        }
        problems.push(`server rejected the event (HTTP ${r.status}: ${oneLine(r.answer).slice(0, 160)}); kept in ${join(o.spoolDir, 'rejected')}`);
      } else down = r.reason;
    }
    if (!outcome.delivered && !outcome.rejected) {
      writeSpool(o.spoolDir, event, body, o.maxSpoolFiles ?? DEFAULT_MAX_SPOOL_FILES);
      outcome.spooled = true;
    }
  } catch (e) {
    problems.push(oneLine(e));
    if (!outcome.delivered && !outcome.spooled && !outcome.rejected) {
      try {
        writeSpool(o.spoolDir, event, JSON.stringify(event), o.maxSpoolFiles ?? DEFAULT_MAX_SPOOL_FILES);
        outcome.spooled = true;
      } catch (e2) {
        problems.push(`could not spool the event: ${oneLine(e2)}`);
      }
    }
  }

  try {
    outcome.spoolLeft = listSpool(o.spoolDir).length;
  } catch {
    /* ignore */
  }
  if (outcome.spoolRejected) {
    problems.push(`${outcome.spoolRejected} spooled event(s) rejected by the server, moved to ${join(o.spoolDir, 'rejected')}`);
  }
  if (outcome.spooled) {
    problems.unshift(
      `${down || 'could not send'}: build event spooled to ${o.spoolDir} (${outcome.spoolLeft} waiting, sent with the next build)`,
    );
  }
  const sent = outcome.spoolSent ? ` (+${outcome.spoolSent} spooled)` : '';
  outcome.summary = outcome.delivered ? `build event ${event.id} sent${sent}` : '';
  if (problems.length) outcome.warning = problems.join('; ');
  return outcome;
}

/**
 * One POST over node:http(s), bounded by the deadline (connection, request and answer).
 * @returns {Promise<{kind: 'ok'|'rejected'|'retry', status?: number, answer?: string, reason?: string}>}
 */
async function post(endpoint, body, token, deadline, userAgent) {
  const left = deadline - Date.now();
  if (left <= 0) return { kind: 'retry', reason: 'timed out' };
  let url;
  try {
    url = new URL(endpoint);
  } catch {
    return { kind: 'rejected', status: null, answer: `invalid server URL ${endpoint}` };
  }
  const lib = url.protocol === 'https:' ? await import('node:https') : await import('node:http');
  /** @type {Record<string, string | number>} */
  const headers = {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(body),
    'user-agent': userAgent || 'shiplog-collector',
  };
  if (token) headers.authorization = `Bearer ${token}`;
  return new Promise((done) => {
    let settled = false;
    const finish = (r) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      done(r);
    };
    const req = lib.request(url, { method: 'POST', headers, agent: false }, (res) => {
      const parts = [];
      res.on('data', (c) => parts.push(c));
      res.on('error', () => finish(classify(res.statusCode, '')));
      res.on('end', () => finish(classify(res.statusCode, Buffer.concat(parts).toString('utf8'))));
    });
    const timer = setTimeout(() => {
      finish({ kind: 'retry', reason: `no answer from ${endpoint} within the timeout` });
      req.destroy();
    }, Math.max(1, Math.floor(left)));
    req.on('error', (e) => {
      const why = /** @type {any} */ (e).code || e.message || '';
      finish({ kind: 'retry', reason: `cannot reach ${endpoint}${why ? ` (${oneLine(why)})` : ''}` });
    });
    req.end(body);
  });
}

function classify(status, answer) {
  if (status >= 200 && status < 300) return { kind: 'ok', status, answer };
  if (status >= 500 || status === 429 || status === 408 || status === 425) {
    return { kind: 'retry', status, answer, reason: `server answered HTTP ${status}` };
  }
  return { kind: 'rejected', status, answer };
}

function listSpool(dir) {
  try {
    return readdirSync(dir, { withFileTypes: true })
      .filter((d) => d.isFile() && d.name.endsWith('.json') && !d.name.startsWith('.'))
      .map((d) => d.name)
      .sort();
  } catch {
    return [];
  }
}

function spoolFileName(event) {
  const safeId = String(event.id).replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 120);
  // The time prefix keeps the files in build order when sorted by name.
  return `${String(Date.now()).padStart(15, '0')}-${safeId}.json`;
}

function writeSpool(dir, event, body, maxFiles) {
  mkdirSync(dir, { recursive: true });
  const file = spoolFileName(event);
  const tmp = join(dir, `.${file}.${process.pid}.tmp`);
  writeFileSync(tmp, body);
  renameSync(tmp, join(dir, file)); // atomic: a reader never sees half a file
  const files = listSpool(dir);
  if (files.length > maxFiles) {
    for (const f of files.slice(0, files.length - maxFiles)) rmSync(join(dir, f), { force: true });
  }
  return file;
}

function writeAnswer(dir, file, info) {
  const answerFile = join(dir, 'rejected', file.replace(/\.json$/, '.answer.json'));
  let answer = info.answer;
  try {
    answer = JSON.parse(info.answer);
  } catch {
    /* keep the text */
  }
  writeFileSync(
    answerFile,
    JSON.stringify({ status: info.status, answer: answer ?? null, error: info.error ?? null, at: new Date().toISOString() }, null, 2),
  );
}

function moveToRejected(dir, file, info) {
  mkdirSync(join(dir, 'rejected'), { recursive: true });
  try {
    renameSync(join(dir, file), join(dir, 'rejected', file));
  } catch (e) {
    if (e && e.code === 'ENOENT') return;
    throw e;
  }
  writeAnswer(dir, file, info);
}
