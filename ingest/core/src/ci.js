// CI detection from the one table every shiplog collector shares (ci-providers.json, also
// embedded by the Rust binary). The table's `about` says how a template is read.

// The table is imported as a JSON module: the shipped bundle (dist/) carries it inline, so
// no file is read at run time.
import table from '../ci-providers.json' with { type: 'json' };

/** The providers of ci-providers.json, in detection order. */
export function ciProviders() {
  return table.providers;
}

const get = (env, k) => {
  const v = env[k];
  if (v === undefined || v === null) return null;
  const s = String(v).trim();
  return s === '' ? null : s;
};

function truthy(env, k) {
  const v = get(env, k);
  return v !== null && v.toLowerCase() !== 'false' && v !== '0';
}

function encode(s) {
  let out = '';
  for (const b of Buffer.from(s, 'utf8')) {
    const c = String.fromCharCode(b);
    out += /[A-Za-z0-9\-._~]/.test(c) ? c : `%${b.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

/** One template; null when a placeholder is unset. */
export function renderTemplate(template, env) {
  let out = '';
  let rest = template;
  let aloneInt = null;
  for (;;) {
    const open = rest.indexOf('{');
    if (open < 0) break;
    out += rest.slice(0, open);
    const close = rest.indexOf('}', open);
    if (close < 0) return null;
    const inner = rest.slice(open + 1, close);
    const bar = inner.indexOf('|');
    const name = bar < 0 ? inner : inner.slice(0, bar);
    const filter = bar < 0 ? '' : inner.slice(bar + 1);
    let value = get(env, name);
    if (value === null) return null;
    switch (filter) {
      case '':
        break;
      case 'branch':
        if (value.startsWith('refs/heads/')) value = value.slice('refs/heads/'.length);
        else if (value.startsWith('origin/')) value = value.slice('origin/'.length);
        break;
      case 'https':
        if (value.startsWith('http://')) value = `https://${value.slice('http://'.length)}`;
        break;
      case 'uri':
        value = encode(value);
        break;
      case 'int':
        if (template === `{${inner}}` && /^[0-9]+$/.test(value)) aloneInt = Number(value);
        break;
      default:
        throw new Error(`ci-providers.json: unknown filter ${filter} in ${template}`);
    }
    out += value;
    rest = rest.slice(close + 1);
  }
  out += rest;
  return aloneInt !== null ? aloneInt : out;
}

function first(alts, env) {
  for (const t of alts || []) {
    const v = renderTemplate(t, env);
    if (v !== null) return v;
  }
  return null;
}

const text = (alts, env) => {
  const v = first(alts, env);
  return v === null ? null : String(v);
};

/**
 * The CI run, or null outside CI: { provider, run_id, run_key, url, commit, branch,
 * base_branch, env, deployment_id, deployment_url, job, step, extra } (absent fields left out).
 * @param {Record<string, string | undefined>} env
 */
export function detectCiRun(env) {
  const p = ciProviders().find((p) => (p.detect.when === 'present' ? get(env, p.detect.var) !== null : truthy(env, p.detect.var)));
  if (!p) return null;
  const run_id = text(p.run_id, env) ?? '';
  /** @type {Record<string, any>} */
  const ci = { provider: p.id, run_id, run_key: text(p.run_key, env) ?? run_id };
  for (const k of ['url', 'commit', 'branch', 'base_branch', 'env', 'deployment_id', 'deployment_url', 'job', 'step']) {
    const v = text(p[k], env);
    if (v !== null) ci[k] = v;
  }
  const extra = {};
  for (const [k, alts] of Object.entries(p.extra || {})) {
    const v = first(alts, env);
    if (v !== null) extra[k] = v;
  }
  if (Object.keys(extra).length) ci.extra = extra;
  return ci;
}

/**
 * `data.ci` of a build event: { provider, run_id, url, ...extra }, or null outside CI.
 * @param {Record<string, string | undefined>} env
 */
export function detectCi(env) {
  const run = detectCiRun(env);
  if (!run) return null;
  return { provider: run.provider, run_id: run.run_id || null, url: run.url ?? null, ...(run.extra || {}) };
}
