// vite-plugin-shiplog: reports every `vite build` to a shiplog server as one `build` event.
//
// Works with Vite 7 (Rollup) and Vite 8 (Rolldown). No runtime dependencies: Node built-ins
// and the global `fetch` only. The plugin never throws and never fails or changes the build:
// every error of its own is caught and printed as one warning line.

import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { basename, dirname, isAbsolute, join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { gzip as gzipCb, constants as zlibConstants } from 'node:zlib';

const gzip = promisify(gzipCb);

const SOURCE = 'vite-plugin';
const DEFAULT_TIMEOUT_MS = 3000;
const DEFAULT_MAX_SPOOL_FILES = 1000;
/** At most this many spooled events are sent per build (the rest wait for the next one). */
const MAX_SPOOLED_PER_BUILD = 200;
const ERROR_MAX_BYTES = 2048;
/** Assets larger than this are not gzipped (their raw size is used). */
const GZIP_MAX_BYTES = 32 << 20;
/** Formats that are already compressed: their gzip size is their size. */
const COMPRESSED_EXT =
  /\.(png|jpe?g|gif|webp|avif|ico|woff2?|mp3|mp4|webm|ogg|zip|gz|br|zst|wasm\.gz)$/i;
const ANSI = /\u001b\[[0-9;?]*[ -/]*[@-~]/g;

/**
 * @typedef {import('./index.d.ts').ShiplogOptions} ShiplogOptions
 * @typedef {import('./index.d.ts').BuildEvent} BuildEvent
 */

/**
 * Creates the plugin.
 * @param {ShiplogOptions} [options]
 * @returns {import('vite').Plugin}
 */
export default function shiplog(options = {}) {
  const opts = options && typeof options === 'object' ? options : {};
  /** Time of the `config` hook: the start of the build as this plugin sees it. */
  let configStartedAt = 0;
  /** True until the first buildStart after a `config` hook (later ones are rebuilds or other environments). */
  let configPending = false;
  /** @type {any} */
  let config = null;
  let watch = false;
  let noUrlLogged = false;
  /** Per-environment build state (Vite 6+ may build several environments with one plugin). */
  const states = new Map();
  /** @type {any} */
  let lastState = null;

  const log = {
    info(msg) {
      try {
        if (config?.logger) config.logger.info(`[shiplog] ${msg}`, { timestamp: false });
        else console.log(`[shiplog] ${msg}`);
      } catch {
        /* never throw */
      }
    },
    warn(msg) {
      try {
        if (config?.logger) config.logger.warn(`[shiplog] ${msg}`);
        else console.warn(`[shiplog] ${msg}`);
      } catch {
        /* never throw */
      }
    },
  };

  /** Runs a hook body; any error of the plugin becomes one warning line. */
  function guard(what, fn) {
    try {
      const r = fn();
      if (r && typeof r.then === 'function') {
        return r.catch((e) => log.warn(`${what} failed: ${oneLine(e)}`));
      }
      return r;
    } catch (e) {
      log.warn(`${what} failed: ${oneLine(e)}`);
    }
  }

  function isDisabled() {
    if (opts.disabled === true) return true;
    const v = process.env.SHIPLOG_DISABLED;
    return v !== undefined && v !== '' && v !== '0' && v.toLowerCase() !== 'false';
  }

  /** @param {any} ctx the plugin context */
  function stateOf(ctx) {
    let name = 'client';
    try {
      name = ctx?.environment?.name || 'client';
    } catch {
      /* older contexts */
    }
    return states.get(name) || (name === 'client' ? lastState : null);
  }

  /** @returns {any} */
  function newState(ctx) {
    let envName = null;
    try {
      envName = ctx?.environment?.name ?? null;
    } catch {
      /* ignore */
    }
    const now = Date.now();
    // The first build starts at the config hook; a watch-mode rebuild starts at buildStart.
    const startedAt = configPending && configStartedAt ? configStartedAt : now;
    configPending = false;
    /** @type {any} */
    const meta = ctx?.meta || {};
    const st = {
      environment: envName,
      startedAt,
      buildStartAt: now,
      buildEndAt: 0,
      renderStartAt: 0,
      generateEndAt: 0,
      writeEndAt: 0,
      viteVersion: meta.viteVersion || null,
      rolldownVersion: meta.rolldownVersion || null,
      rollupVersion: meta.rollupVersion || null,
      modulesTransformed: null,
      modulesTotal: null,
      bundle: null,
      outDir: null,
      error: null,
      reported: false,
    };
    states.set(envName || 'client', st);
    lastState = st;
    return st;
  }

  function countModules(ctx, st) {
    try {
      const ids = [...ctx.getModuleIds()];
      let external = 0;
      for (const id of ids) {
        // Rollup reports externals in getModuleIds; Rolldown leaves isExternal undefined.
        if (ctx.getModuleInfo(id)?.isExternal === true) external++;
      }
      st.modulesTotal = ids.length;
      st.modulesTransformed = ids.length - external;
    } catch {
      /* the bundler does not expose the module graph: leave the counts null */
    }
  }

  /** Records a failure (the first one wins) and reports right away. */
  async function fail(ctx, err) {
    const st = stateOf(ctx) || newState(ctx);
    if (st.reported) return;
    if (!st.error) st.error = err;
    await report(st);
  }

  async function report(st) {
    if (st.reported) return;
    st.reported = true;
    if (isDisabled()) return;
    const url = (opts.url || process.env.SHIPLOG_URL || '').trim();
    if (!url) {
      if (!noUrlLogged) {
        noUrlLogged = true;
        log.info('no server configured (set SHIPLOG_URL or the `url` option): build not reported');
      }
      return;
    }
    const event = await buildEvent(st);
    const outcome = await deliver(event, {
      url,
      token: opts.token || process.env.SHIPLOG_TOKEN || '',
      timeoutMs: positiveNumber(opts.timeoutMs, DEFAULT_TIMEOUT_MS),
      spoolDir: spoolDirFor(opts, config?.root || process.cwd()),
      maxSpoolFiles: positiveNumber(opts.maxSpoolFiles, DEFAULT_MAX_SPOOL_FILES),
    });
    if (typeof opts.onEvent === 'function') {
      try {
        await opts.onEvent(event, outcome);
      } catch {
        /* a user callback must not break the build either */
      }
    }
    if (outcome.warning) log.warn(outcome.warning);
    else log.info(outcome.summary);
  }

  async function buildEvent(st) {
    const root = config?.root || process.cwd();
    const end = Date.now();
    const mode = config?.mode || 'production';
    const ci = detectCi(process.env);
    const git = detectGit(process.env, root);
    const sizes = await measureBundle(st.bundle);

    const phases = [];
    const phase = (name, from, to) => {
      if (from && to && to >= from) phases.push({ name, duration_ms: Math.round(to - from) });
    };
    if (st.startedAt < st.buildStartAt) phase('config', st.startedAt, st.buildStartAt);
    phase('transform', st.buildStartAt, st.buildEndAt || (st.error ? end : 0));
    phase('render', st.buildEndAt, st.generateEndAt || (st.error && st.buildEndAt ? end : 0));
    phase('write', st.generateEndAt, st.writeEndAt || end);

    const bundler = st.rolldownVersion ? 'rolldown' : st.rollupVersion ? 'rollup' : null;
    /** @type {Record<string, any>} */
    const data = {
      tool: 'vite',
      tool_version: st.viteVersion || viteVersionFrom(root),
      bundler,
      bundler_version: st.rolldownVersion || st.rollupVersion || null,
      mode,
      success: !st.error,
      duration_ms: Math.max(0, Math.round(end - st.startedAt)),
      phases,
      modules_transformed: st.modulesTransformed,
      modules_total: st.modulesTotal,
      bundle_bytes: sizes ? sizes.bundleBytes : null,
      gzip_bytes: sizes ? sizes.gzipBytes : null,
      chunks: sizes ? sizes.chunks : null,
      assets: sizes ? sizes.assets : null,
      ci,
      node_version: process.versions.node,
    };
    if (sizes && sizes.sourcemapBytes) data.sourcemap_bytes = sizes.sourcemapBytes;
    if (st.environment && st.environment !== 'client') data.environment = st.environment;
    if (watch) data.watch = true;
    if (st.error) data.error = errorText(st.error);

    const runPart = ci?.run_id ? `${ci.provider}-${ci.run_id}` : 'local';
    const envPart = st.environment && st.environment !== 'client' ? `-${st.environment}` : '';
    /** @type {BuildEvent} */
    const event = {
      id: `${runPart}-${st.startedAt}-${randomBytes(6).toString('hex')}${envPart}`,
      kind: 'build',
      source: SOURCE,
      time: new Date(st.startedAt).toISOString(),
      project: projectName(opts, root),
      env: envName(opts, mode),
      data,
    };
    if (git.commit) event.commit = git.commit;
    if (git.branch) event.branch = git.branch;
    return event;
  }

  return {
    name: 'vite-plugin-shiplog',
    apply: 'build',

    config() {
      guard('config', () => {
        // One `config` call per build() / `vite build`: a fresh start.
        configStartedAt = Date.now();
        configPending = true;
        states.clear();
        lastState = null;
      });
    },

    configResolved(resolved) {
      guard('configResolved', () => {
        config = resolved;
        watch = !!resolved?.build?.watch;
      });
    },

    buildStart() {
      guard('buildStart', () => {
        newState(this);
      });
    },

    async buildEnd(err) {
      await guard('buildEnd', async () => {
        const st = stateOf(this) || newState(this);
        st.buildEndAt = Date.now();
        countModules(this, st);
        // Report now: not every bundler calls closeBundle after a failed build.
        if (err) await fail(this, err);
      });
    },

    renderStart() {
      guard('renderStart', () => {
        const st = stateOf(this);
        if (st) st.renderStartAt = Date.now();
      });
    },

    async renderError(err) {
      await guard('renderError', () => fail(this, err));
    },

    generateBundle: {
      order: 'post',
      handler(outputOptions, bundle) {
        guard('generateBundle', () => {
          const st = stateOf(this);
          if (!st) return;
          // Sizes are measured at report time, from this same object (final by then).
          st.bundle = bundle;
          st.outDir = outputOptions?.dir || null;
          st.generateEndAt = Date.now();
        });
      },
    },

    writeBundle: {
      order: 'post',
      sequential: true,
      async handler() {
        await guard('writeBundle', async () => {
          const st = stateOf(this);
          if (!st) return;
          st.writeEndAt = Date.now();
          // In watch mode closeBundle only runs when the watcher stops: report each rebuild here.
          if (watch) await report(st);
        });
      },
    },

    async closeBundle(err) {
      await guard('closeBundle', async () => {
        const st = stateOf(this);
        if (!st || st.reported) return;
        if (err && !st.error) st.error = err;
        await report(st);
      });
    },
  };
}

export { shiplog };

// ---------------------------------------------------------------------------------------------
// Event fields

function positiveNumber(v, dflt) {
  const n = Number(v);
  return Number.isFinite(n) && n > 0 ? n : dflt;
}

function oneLine(e) {
  const s = e instanceof Error ? e.message : String(e);
  return s.replace(ANSI, '').replace(/\s+/g, ' ').trim().slice(0, 300);
}

/** The error's message without colours, at most 2 KB of UTF-8. */
export function errorText(err) {
  let s;
  if (err instanceof Error || (err && typeof err.message === 'string')) s = err.message;
  else s = String(err);
  s = s.replace(ANSI, '').trim() || 'build failed';
  if (Buffer.byteLength(s) <= ERROR_MAX_BYTES) return s;
  let out = s.slice(0, ERROR_MAX_BYTES);
  while (Buffer.byteLength(out) > ERROR_MAX_BYTES) out = out.slice(0, -1);
  // Do not leave half a surrogate pair behind.
  if (/[\uD800-\uDBFF]$/.test(out)) out = out.slice(0, -1);
  return out;
}

function envName(opts, mode) {
  if (opts.env) return String(opts.env);
  if (process.env.SHIPLOG_ENV) return process.env.SHIPLOG_ENV;
  // Vercel builds previews with mode `production`: its own variable says which it is.
  if (process.env.VERCEL_ENV) return process.env.VERCEL_ENV;
  return mode === 'production' ? 'production' : mode;
}

function projectName(opts, root) {
  if (opts.project) return String(opts.project);
  if (process.env.SHIPLOG_PROJECT) return process.env.SHIPLOG_PROJECT;
  let dir = root;
  for (let i = 0; i < 20; i++) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
      if (pkg && typeof pkg.name === 'string' && pkg.name) return pkg.name;
    } catch {
      /* no package.json here */
    }
    const up = dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  return basename(root) || 'unknown';
}

function viteVersionFrom(root) {
  try {
    let dir = root;
    for (let i = 0; i < 20; i++) {
      const p = join(dir, 'node_modules', 'vite', 'package.json');
      if (existsSync(p)) return JSON.parse(readFileSync(p, 'utf8')).version || null;
      const up = dirname(dir);
      if (up === dir) break;
      dir = up;
    }
  } catch {
    /* unknown */
  }
  return null;
}

/**
 * The CI run the build belongs to, from the provider's variables; null outside CI.
 * @param {NodeJS.ProcessEnv} env
 */
export function detectCi(env) {
  const v = (k) => (env[k] && String(env[k]).trim()) || null;
  if (v('GITHUB_ACTIONS')) {
    const server = v('GITHUB_SERVER_URL') || 'https://github.com';
    const repo = v('GITHUB_REPOSITORY');
    const run = v('GITHUB_RUN_ID');
    const attempt = v('GITHUB_RUN_ATTEMPT');
    return {
      provider: 'github',
      run_id: run,
      url: repo && run ? `${server}/${repo}/actions/runs/${run}${attempt && attempt !== '1' ? `/attempts/${attempt}` : ''}` : null,
    };
  }
  if (v('GITLAB_CI')) {
    return {
      provider: 'gitlab',
      run_id: v('CI_PIPELINE_ID') || v('CI_JOB_ID'),
      url: v('CI_PIPELINE_URL') || v('CI_JOB_URL'),
    };
  }
  if (v('CIRCLECI')) {
    return {
      provider: 'circleci',
      run_id: v('CIRCLE_WORKFLOW_ID') || v('CIRCLE_BUILD_NUM'),
      url: v('CIRCLE_BUILD_URL'),
    };
  }
  if (v('VERCEL')) {
    const host = v('VERCEL_URL');
    return {
      provider: 'vercel',
      run_id: v('VERCEL_DEPLOYMENT_ID') || host,
      url: host ? `https://${host}` : null,
    };
  }
  if (v('NETLIFY')) {
    return { provider: 'netlify', run_id: v('BUILD_ID'), url: v('DEPLOY_URL') };
  }
  if (v('BUILDKITE')) {
    return { provider: 'buildkite', run_id: v('BUILDKITE_BUILD_ID'), url: v('BUILDKITE_BUILD_URL') };
  }
  if (v('BITBUCKET_BUILD_NUMBER')) {
    const origin = v('BITBUCKET_GIT_HTTP_ORIGIN');
    const n = v('BITBUCKET_BUILD_NUMBER');
    return {
      provider: 'bitbucket',
      run_id: n,
      url: origin ? `${origin.replace(/^http:/, 'https:')}/pipelines/results/${n}` : null,
    };
  }
  if (v('JENKINS_URL')) {
    return { provider: 'jenkins', run_id: v('BUILD_TAG') || v('BUILD_ID'), url: v('BUILD_URL') };
  }
  if (v('TF_BUILD')) {
    return { provider: 'azure', run_id: v('BUILD_BUILDID'), url: null };
  }
  const ci = v('CI');
  if (ci && ci !== '0' && ci.toLowerCase() !== 'false') {
    return { provider: 'other', run_id: null, url: null };
  }
  return null;
}

/**
 * Commit and branch: CI variables first, else git (skipped silently when git is absent).
 * @param {NodeJS.ProcessEnv} env
 * @param {string} cwd
 */
export function detectGit(env, cwd) {
  const v = (k) => (env[k] && String(env[k]).trim()) || null;
  let commit =
    v('SHIPLOG_COMMIT') ||
    v('GITHUB_SHA') ||
    v('CI_COMMIT_SHA') ||
    v('CIRCLE_SHA1') ||
    v('VERCEL_GIT_COMMIT_SHA') ||
    v('BUILDKITE_COMMIT') ||
    v('BITBUCKET_COMMIT') ||
    (v('NETLIFY') ? v('COMMIT_REF') : null) ||
    v('GIT_COMMIT');
  let branch =
    v('SHIPLOG_BRANCH') ||
    // On a pull request GITHUB_REF_NAME is `123/merge`; the head branch is the useful one.
    v('GITHUB_HEAD_REF') ||
    v('GITHUB_REF_NAME') ||
    v('CI_COMMIT_REF_NAME') ||
    v('CIRCLE_BRANCH') ||
    v('VERCEL_GIT_COMMIT_REF') ||
    v('BUILDKITE_BRANCH') ||
    v('BITBUCKET_BRANCH') ||
    (v('NETLIFY') ? v('BRANCH') : null) ||
    v('GIT_BRANCH');
  if (!commit) commit = git(['rev-parse', 'HEAD'], cwd);
  if (!branch) {
    const b = git(['rev-parse', '--abbrev-ref', 'HEAD'], cwd);
    branch = b && b !== 'HEAD' ? b : null; // detached HEAD has no branch
  }
  return { commit, branch };
}

function git(args, cwd) {
  try {
    const out = execFileSync('git', args, {
      cwd,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
      timeout: 2000,
      windowsHide: true,
    });
    return out.trim() || null;
  } catch {
    return null; // no git, not a repository, or no commit yet
  }
}

/**
 * Sizes of the output bundle: chunks and assets with bytes and gzip bytes. Source maps are
 * not shipped to users: they are left out of the lists and sums and totalled apart.
 * @param {Record<string, any> | null} bundle
 */
export async function measureBundle(bundle) {
  if (!bundle || typeof bundle !== 'object') return null;
  const chunks = [];
  const assets = [];
  let sourcemapBytes = 0;
  const jobs = [];
  for (const item of Object.values(bundle)) {
    if (!item || typeof item.fileName !== 'string') continue;
    const content = item.type === 'chunk' ? item.code : item.source;
    const buf = toBuffer(content);
    if (item.fileName.endsWith('.map')) {
      sourcemapBytes += buf.length;
      continue;
    }
    if (item.type === 'chunk') {
      const c = {
        name: item.fileName,
        chunk_name: item.name ?? null,
        bytes: buf.length,
        gzip_bytes: null,
        is_entry: !!item.isEntry,
        dynamic_import: !!item.isDynamicEntry,
      };
      chunks.push(c);
      jobs.push(gzipSize(item.fileName, buf).then((n) => (c.gzip_bytes = n)));
    } else {
      const a = {
        name: item.fileName,
        bytes: buf.length,
        gzip_bytes: null,
      };
      assets.push(a);
      jobs.push(gzipSize(item.fileName, buf).then((n) => (a.gzip_bytes = n)));
    }
  }
  await Promise.all(jobs);
  const byName = (a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
  chunks.sort(byName);
  assets.sort(byName);
  const all = [...chunks, ...assets];
  return {
    chunks,
    assets,
    bundleBytes: all.reduce((s, x) => s + x.bytes, 0),
    gzipBytes: all.reduce((s, x) => s + (x.gzip_bytes ?? x.bytes), 0),
    sourcemapBytes,
  };
}

function toBuffer(content) {
  if (typeof content === 'string') return Buffer.from(content, 'utf8');
  if (content instanceof Uint8Array) return Buffer.from(content.buffer, content.byteOffset, content.byteLength);
  return Buffer.alloc(0);
}

async function gzipSize(fileName, buf) {
  if (buf.length === 0) return 0;
  if (COMPRESSED_EXT.test(fileName) || buf.length > GZIP_MAX_BYTES) return buf.length;
  try {
    return (await gzip(buf, { level: zlibConstants.Z_DEFAULT_COMPRESSION })).length;
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------------------------
// Delivery and spool

/**
 * The spool folder: `spoolDir` (relative to the Vite root), else
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
 * @param {{url: string, token?: string, timeoutMs: number, spoolDir: string, maxSpoolFiles?: number}} o
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
      const r = await post(endpoint, body, o.token, deadline);
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
      const r = await post(endpoint, body, o.token, deadline);
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
 * One POST, bounded by the deadline.
 * @returns {Promise<{kind: 'ok'|'rejected'|'retry', status?: number, answer?: string, reason?: string}>}
 */
async function post(endpoint, body, token, deadline) {
  const left = deadline - Date.now();
  if (left <= 0) return { kind: 'retry', reason: 'timed out' };
  /** @type {Record<string, string>} */
  const headers = { 'content-type': 'application/json', 'user-agent': 'vite-plugin-shiplog' };
  if (token) headers.authorization = `Bearer ${token}`;
  try {
    const signal = AbortSignal.timeout(Math.max(1, Math.floor(left)));
    const res = await fetch(endpoint, { method: 'POST', headers, body, signal });
    let answer = '';
    try {
      answer = await res.text();
    } catch {
      /* the body timed out or broke: the status is what counts */
    }
    if (res.status >= 200 && res.status < 300) return { kind: 'ok', status: res.status, answer };
    if (res.status >= 500 || res.status === 429 || res.status === 408 || res.status === 425) {
      return { kind: 'retry', status: res.status, answer, reason: `server answered HTTP ${res.status}` };
    }
    return { kind: 'rejected', status: res.status, answer };
  } catch (e) {
    const name = e && /** @type {any} */ (e).name;
    if (name === 'TimeoutError' || name === 'AbortError') return { kind: 'retry', reason: `no answer from ${endpoint} within the timeout` };
    const cause = e && /** @type {any} */ (e).cause;
    const why = cause?.code || cause?.message || (e && /** @type {any} */ (e).message) || '';
    return { kind: 'retry', reason: `cannot reach ${endpoint}${why ? ` (${oneLine(why)})` : ''}` };
  }
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
