// Delivery: POST /v1/events (http.js: neither node:http nor the global fetch, whose loading
// and first use cost a build tens of milliseconds). One request per build: the spooled events (oldest first)
// and this build's event in one array, which the server stores or refuses event by event,
// so a build waits one round trip whatever the spool holds, bounded by `timeoutMs`.
// Whatever is not acknowledged by then is spooled to disk (one file per event, written
// atomically) and sent by the next build; the server deduplicates on (source, id), so an
// event whose answer was lost is stored once. Events the server refuses (4xx) go to
// rejected/ with its answer.
//
// The request is http.js's: one HTTP/1.1 POST on the connection opened when the build
// started (preconnect), else on a new one.

import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { isAbsolute, join, resolve } from 'node:path';

import { oneLine } from './event.js';
import { post as httpPost } from './http.js';

export { preconnect } from './http.js';

const DEFAULT_MAX_SPOOL_FILES = 1000;
/** At most this many spooled events ride along with one build's event (the rest wait for the next). */
const MAX_SPOOLED_PER_BUILD = 200;
/** ... and at most this many bytes of them (the server's body limit is 10 MiB by default). */
const MAX_SPOOLED_BYTES_PER_BUILD = 2 << 20;

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
 * Sends the spooled events (oldest first) and `event` in one request. Never throws.
 * Bounded by `timeoutMs` (connection, request and answer).
 * @param {import('../index.d.ts').BuildEvent} event
 * @param {{url: string, token?: string, timeoutMs: number, spoolDir: string, maxSpoolFiles?: number, userAgent?: string}} o
 * @returns {Promise<import('../index.d.ts').DeliveryOutcome>}
 */
export async function deliver(event, o) {
  const deadline = Date.now() + o.timeoutMs;
  const endpoint = `${o.url.trim().replace(/\/+$/, '')}/v1/events`;
  const maxFiles = o.maxSpoolFiles ?? DEFAULT_MAX_SPOOL_FILES;
  /** @type {import('../index.d.ts').DeliveryOutcome} */
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
  let waiting = 0; // spooled events not sent by this build

  try {
    const body = JSON.stringify(event);
    // 1. The spooled events that ride along, oldest first.
    const files = listSpool(o.spoolDir);
    /** @type {{file: string, body: string}[]} */
    const batch = [];
    let bytes = 0;
    let gone = 0;
    for (const file of files) {
      if (batch.length >= MAX_SPOOLED_PER_BUILD || bytes >= MAX_SPOOLED_BYTES_PER_BUILD) break;
      let text;
      try {
        text = readFileSync(join(o.spoolDir, file), 'utf8');
        const parsed = JSON.parse(text);
        if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) throw new Error('not an event object');
      } catch (e) {
        if (e && e.code === 'ENOENT') {
          gone++; // another build sent it meanwhile
          continue;
        }
        moveToRejected(o.spoolDir, file, { status: null, error: `unreadable spool file: ${oneLine(e)}` });
        outcome.spoolRejected++;
        continue;
      }
      batch.push({ file, body: text });
      bytes += text.length;
    }
    waiting = files.length - gone - batch.length - outcome.spoolRejected;

    // 2. One request: the event alone, or [spooled…, event].
    let answer = await post(endpoint, batch.length ? `[${batch.map((b) => b.body).join(',')},${body}]` : body, o, deadline);
    if (answer.kind === 'rejected' && answer.status === 413 && batch.length) {
      // Over the server's body limit: this build's event alone; the spooled ones wait.
      waiting += batch.length;
      batch.length = 0;
      answer = await post(endpoint, body, o, deadline);
    }
    outcome.status = answer.status ?? null;

    if (answer.kind === 'retry') {
      down = answer.reason;
      waiting += batch.length;
    } else {
      // Which events the server refused: by index (2xx, or a 4xx answering for each
      // event), else all of them (a 4xx about the request: token, size, …).
      const refused = refusedByIndex(answer, batch.length + 1);
      batch.forEach((b, i) => {
        const why = refused.get(i);
        if (why === undefined) {
          rmSync(join(o.spoolDir, b.file), { force: true });
          outcome.spoolSent++;
        } else {
          moveToRejected(o.spoolDir, b.file, { status: answer.status, answer: why });
          outcome.spoolRejected++;
        }
      });
      const why = refused.get(batch.length);
      if (why === undefined) outcome.delivered = true;
      else {
        outcome.rejected = true;
        const file = spoolFileName(event);
        try {
          mkdirSync(join(o.spoolDir, 'rejected'), { recursive: true });
          writeFileSync(join(o.spoolDir, 'rejected', file), body);
          writeAnswer(o.spoolDir, file, { status: answer.status, answer: why });
        } catch {
          /* best effort */
        }
        problems.push(`server rejected the event (HTTP ${answer.status}: ${oneLine(why).slice(0, 160)}); kept in ${join(o.spoolDir, 'rejected')}`);
      }
    }
    if (!outcome.delivered && !outcome.rejected) {
      writeSpool(o.spoolDir, event, body, maxFiles);
      waiting++;
      outcome.spooled = true;
    }
  } catch (e) {
    problems.push(oneLine(e));
    if (!outcome.delivered && !outcome.spooled && !outcome.rejected) {
      try {
        writeSpool(o.spoolDir, event, JSON.stringify(event), maxFiles);
        waiting++;
        outcome.spooled = true;
      } catch (e2) {
        problems.push(`could not spool the event: ${oneLine(e2)}`);
      }
    }
  }

  outcome.spoolLeft = Math.min(waiting, maxFiles);
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
 * The refused events of a request of `count` events: index → the server's words about it.
 * A 2xx (and a 400, where nothing was stored) lists them by index; any other 4xx is about
 * the whole request (token, size, …) and refuses every event.
 * @returns {Map<number, string>}
 */
function refusedByIndex(answer, count) {
  const refused = new Map();
  let listed = null;
  try {
    const parsed = JSON.parse(answer.answer);
    if (parsed && Array.isArray(parsed.rejected)) listed = parsed.rejected;
  } catch {
    /* not JSON */
  }
  if (listed && (answer.kind === 'ok' || answer.status === 400)) {
    for (const r of listed) {
      if (Number.isInteger(r?.index) && r.index >= 0 && r.index < count) {
        // The whole answer for a lone event; the entry about it within a batch.
        const { index, ...about } = r;
        refused.set(index, count === 1 ? answer.answer : JSON.stringify(about));
      }
    }
  }
  if (answer.kind !== 'ok') {
    for (let i = 0; i < count; i++) if (!refused.has(i)) refused.set(i, answer.answer);
  }
  return refused;
}

/**
 * One POST, bounded by the deadline (connection, request and answer).
 * @returns {Promise<{kind: 'ok'|'rejected'|'retry', status?: number | null, answer?: string, reason?: string}>}
 */
async function post(endpoint, body, o, deadline) {
  let url;
  try {
    url = new URL(endpoint);
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error('not http');
  } catch {
    return { kind: 'rejected', status: null, answer: `invalid server URL ${endpoint}` };
  }
  const left = deadline - Date.now();
  if (left <= 0) return { kind: 'retry', reason: `no answer from ${endpoint} within the timeout` };
  /** @type {Record<string, string | number>} */
  const headers = {
    'content-type': 'application/json',
    'user-agent': o.userAgent || 'shiplog-collector',
  };
  if (o.token) headers.authorization = `Bearer ${o.token}`;
  const r = await httpPost(url, headers, body, left);
  if ('status' in r) return classify(r.status, r.answer);
  if (r.timedOut) return { kind: 'retry', reason: `no answer from ${endpoint} within the timeout` };
  return { kind: 'retry', reason: `cannot reach ${endpoint}${r.error ? ` (${oneLine(r.error)})` : ''}` };
}

/** @returns {{kind: 'ok'|'rejected'|'retry', status: number, answer: string, reason?: string}} */
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

/** Writes one event to the spool; past `maxFiles` events the oldest are dropped. */
function writeSpool(dir, event, body, maxFiles) {
  mkdirSync(dir, { recursive: true });
  const file = spoolFileName(event);
  const tmp = join(dir, `.${file}.${process.pid}.tmp`);
  writeFileSync(tmp, body);
  renameSync(tmp, join(dir, file)); // atomic: a reader never sees half a file
  const files = listSpool(dir);
  for (const f of files.slice(0, Math.max(0, files.length - maxFiles))) rmSync(join(dir, f), { force: true });
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
