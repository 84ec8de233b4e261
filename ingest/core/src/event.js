// The build event every shiplog bundler plugin sends, and the per-build session that
// gathers it: start time, phases, output sizes (measured while the bundler writes), git
// and CI (read while the bundler builds). A plugin never throws and never fails or changes
// the build: every error of its own becomes one warning line.

import { existsSync, readFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

import { detectCiRun } from './ci.js';
import { deliver, preconnect, spoolDirFor } from './deliver.js';
import { detectGit } from './git.js';
import { createSizer, preloadGzip } from './sizes.js';

const DEFAULT_TIMEOUT_MS = 2000;
const DEFAULT_MAX_SPOOL_FILES = 1000;
const ERROR_MAX_BYTES = 2048;
const ANSI = /\u001b\[[0-9;?]*[ -/]*[@-~]/g;

export function oneLine(e) {
  const s = e instanceof Error ? e.message : String(e);
  return s.replace(ANSI, '').replace(/\s+/g, ' ').trim().slice(0, 300);
}

/** The error's message without colours, at most 2 KB of UTF-8. */
export function errorText(err) {
  let s;
  if (err instanceof Error || (err && typeof err.message === 'string')) s = err.message;
  else if (Array.isArray(err)) s = err.map((e) => e?.text ?? e?.message ?? String(e)).join('\n');
  else s = String(err);
  s = s.replace(ANSI, '').trim() || 'build failed';
  if (Buffer.byteLength(s) <= ERROR_MAX_BYTES) return s;
  let out = s.slice(0, ERROR_MAX_BYTES);
  while (Buffer.byteLength(out) > ERROR_MAX_BYTES) out = out.slice(0, -1);
  // Do not leave half a surrogate pair behind.
  if (/[\uD800-\uDBFF]$/.test(out)) out = out.slice(0, -1);
  return out;
}

/**
 * 12 random hex digits for an event id. Math.random is seeded per process from the
 * system's entropy, and two ids are the same only with the same start millisecond, CI run
 * and 48 random bits: node:crypto (about 10 ms to load) is not needed for it.
 */
function randomHex() {
  let s = '';
  for (let i = 0; i < 2; i++) s += Math.floor(Math.random() * 0x1000000).toString(16).padStart(6, '0');
  return s;
}

function positiveNumber(v, dflt) {
  const n = Number(v);
  return Number.isFinite(n) && n > 0 ? n : dflt;
}

/** Whether the options or SHIPLOG_DISABLED turn reporting off. */
export function isDisabled(opts) {
  if (opts.disabled === true) return true;
  const v = process.env.SHIPLOG_DISABLED;
  return v !== undefined && v !== '' && v !== '0' && v.toLowerCase() !== 'false';
}

/** `project` option, SHIPLOG_PROJECT, the nearest package.json name, the folder name. */
export function projectName(opts, root) {
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

/** The nearest folder from `dir` upwards that holds a package.json, else `dir`. */
export function packageRoot(dir) {
  let d = dir;
  for (let i = 0; i < 20; i++) {
    if (existsSync(join(d, 'package.json'))) return d;
    const up = dirname(d);
    if (up === d) break;
    d = up;
  }
  return dir;
}

/** The version of an installed package, looked up from `root` upwards. */
export function packageVersion(root, name) {
  let dir = root;
  for (let i = 0; i < 20; i++) {
    try {
      return JSON.parse(readFileSync(join(dir, 'node_modules', name, 'package.json'), 'utf8')).version || null;
    } catch {
      /* not here */
    }
    const up = dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  return null;
}

/**
 * A reporter for one plugin instance.
 * @param {import('../index.d.ts').ShiplogOptions} options
 * @param {{source: string, userAgent: string}} who
 */
export function createReporter(options, who) {
  const opts = options && typeof options === 'object' ? options : {};
  let logger = null;
  let noUrlLogged = false;

  const log = {
    info(msg) {
      try {
        if (logger?.info) logger.info(`[shiplog] ${msg}`, { timestamp: false });
        else console.log(`[shiplog] ${msg}`);
      } catch {
        /* never throw */
      }
    },
    warn(msg) {
      try {
        if (logger?.warn) logger.warn(`[shiplog] ${msg}`);
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
      if (r && typeof r.then === 'function') return r.catch((e) => log.warn(`${what} failed: ${oneLine(e)}`));
      return r;
    } catch (e) {
      log.warn(`${what} failed: ${oneLine(e)}`);
    }
  }

  const serverUrl = () => (opts.url || process.env.SHIPLOG_URL || '').trim();

  /**
   * Starts one build. `startedAt` defaults to now; git and CI are read right away, node:zlib
   * and the HTTP client loaded and the connection to the server opened, in the background
   * while the bundler works.
   */
  function start({ root = process.cwd(), startedAt = Date.now() } = {}) {
    const active = !isDisabled(opts);
    const ci = active ? detectCiRun(process.env) : null;
    const git = active ? detectGit(process.env, root, ci).catch(() => ({ commit: null, branch: null })) : null;
    if (active && serverUrl()) {
      preconnect(serverUrl());
      preloadGzip();
    }
    const sizer = createSizer();
    const phases = [];
    let reported = false;
    const session = {
      root,
      startedAt,
      ci,
      sizer,
      error: null,
      /** Adds a phase from two times (ignored when either is missing). */
      phase(name, from, to) {
        if (from && to && to >= from) phases.push({ name, duration_ms: Math.round(to - from) });
      },
      /** Hands an output file over for measuring (see sizes.js). Ignored when disabled. */
      addOutput(file) {
        if (active) sizer.add(file);
      },
      get reported() {
        return reported;
      },
      /**
       * Builds and delivers the event. `data` holds tool, tool_version, bundler,
       * bundler_version, mode, modules_transformed, modules_total and any extra field.
       */
      /** @param {{data?: Record<string, any>, success?: boolean, error?: unknown, environment?: string | null, endAt?: number}} [o] */
      async report({ data = {}, success = !session.error, error = session.error, environment = null, endAt = Date.now() } = {}) {
        if (reported) return null;
        reported = true;
        if (!active) return null;
        const url = serverUrl();
        if (!url) {
          if (!noUrlLogged) {
            noUrlLogged = true;
            log.info('no server configured (set SHIPLOG_URL or the `url` option): build not reported');
          }
          return null;
        }
        const [sizes, repo] = await Promise.all([sizer.result(), git]);
        const mode = data.mode || 'production';
        /** @type {import('../index.d.ts').BuildData} */
        const body = {
          tool: null,
          tool_version: null,
          bundler: null,
          bundler_version: null,
          ...data,
          mode,
          success: !!success,
          duration_ms: Math.max(0, Math.round(endAt - startedAt)),
          phases,
          modules_transformed: data.modules_transformed ?? null,
          modules_total: data.modules_total ?? null,
          bundle_bytes: sizes ? sizes.bundleBytes : null,
          gzip_bytes: sizes ? sizes.gzipBytes : null,
          chunks: sizes ? sizes.chunks : null,
          assets: sizes ? sizes.assets : null,
          ci: ci ? { provider: ci.provider, run_id: ci.run_id || null, url: ci.url ?? null, ...(ci.extra || {}) } : null,
          node_version: process.versions.node,
        };
        if (sizes && sizes.sourcemapBytes) body.sourcemap_bytes = sizes.sourcemapBytes;
        if (environment) body.environment = environment;
        if (!success) body.error = errorText(error ?? 'build failed');

        const runPart = ci?.run_id ? `${ci.provider}-${ci.run_id}`.replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 80) : 'local';
        const envPart = environment ? `-${environment}` : '';
        /** @type {import('../index.d.ts').BuildEvent} */
        const event = {
          id: `${runPart}-${startedAt}-${randomHex()}${envPart}`,
          kind: 'build',
          source: who.source,
          time: new Date(startedAt).toISOString(),
          project: projectName(opts, root),
          env: opts.env ? String(opts.env) : process.env.SHIPLOG_ENV || ci?.env || (mode === 'production' ? 'production' : mode),
          data: body,
        };
        if (repo?.commit) event.commit = repo.commit;
        if (repo?.branch) event.branch = repo.branch;
        if (ci?.deployment_id) event.deployment_id = ci.deployment_id;

        const outcome = await deliver(event, {
          url,
          token: opts.token || process.env.SHIPLOG_TOKEN || '',
          timeoutMs: positiveNumber(opts.timeoutMs, DEFAULT_TIMEOUT_MS),
          spoolDir: spoolDirFor(opts, root),
          maxSpoolFiles: positiveNumber(opts.maxSpoolFiles, DEFAULT_MAX_SPOOL_FILES),
          userAgent: who.userAgent,
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
        return event;
      },
    };
    return session;
  }

  return {
    options: opts,
    log,
    guard,
    start,
    /** Where the plugin's lines go (an object with info and warn); default the console. */
    setLogger(l) {
      logger = l || null;
    },
  };
}
