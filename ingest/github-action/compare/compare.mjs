// The `shiplog compare` GitHub Action: runs `shiplog compare --format markdown`, appends
// the result to the job summary, writes it into ONE pull-request comment (found again by a
// hidden marker and updated in place on each push; GitHub REST API, base URL configurable
// for GitHub Enterprise), and exits 1 on a budget breach when asked to. Problems of its own
// (no binary, shiplog unreachable, a read-only token on a fork) are warnings, never a
// failed step. Node built-ins only: it runs on the runner's Node without an install.

import { spawnSync } from 'node:child_process';
import { appendFileSync, readFileSync } from 'node:fs';

const env = process.env;
const input = (name) => (env[`INPUT_${name}`] || '').trim();
const warn = (msg) => console.log(`::warning title=shiplog compare::${msg.replace(/\r?\n/g, ' ')}`);
const output = (k, v) => {
  if (env.GITHUB_OUTPUT) appendFileSync(env.GITHUB_OUTPUT, `${k}=${v}\n`);
};

function event() {
  try {
    return JSON.parse(readFileSync(env.GITHUB_EVENT_PATH, 'utf8'));
  } catch {
    return {};
  }
}

/** The comparison as Markdown and the verdict, or null when it could not be made. */
function runCompare(project) {
  const args = ['compare', '--format', 'markdown'];
  if (project) args.push('--project', project);
  const base = input('BASE') || env.GITHUB_BASE_REF || '';
  if (base) args.push('--base', base);
  const head = input('HEAD') || env.GITHUB_SHA || '';
  if (head) args.push('--head', head);
  if (input('TOOL')) args.push('--tool', input('TOOL'));
  const childEnv = { ...env };
  if (input('URL')) childEnv.SHIPLOG_URL = input('URL');
  if (input('TOKEN')) {
    console.log(`::add-mask::${input('TOKEN')}`);
    childEnv.SHIPLOG_TOKEN = input('TOKEN');
  }
  const r = spawnSync(input('BINARY') || 'shiplog', args, { env: childEnv, encoding: 'utf8' });
  if (r.error) {
    warn(`cannot run shiplog (${r.error.message}): set the 'binary' input or put shiplog on PATH`);
    return null;
  }
  if (r.status === 0 || r.status === 1) return { markdown: r.stdout, verdict: r.status === 0 ? 'pass' : 'breach' };
  warn(`shiplog compare failed: ${(r.stderr || '').trim() || `exit ${r.status}`}`);
  return null;
}

async function github(method, path, body) {
  const api = (input('API_URL') || env.GITHUB_API_URL || 'https://api.github.com').replace(/\/+$/, '');
  const res = await fetch(`${api}${path}`, {
    method,
    headers: {
      accept: 'application/vnd.github+json',
      authorization: `Bearer ${input('GITHUB_TOKEN')}`,
      'x-github-api-version': '2022-11-28',
      'user-agent': 'shiplog-compare-action',
      ...(body ? { 'content-type': 'application/json' } : {}),
    },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path}: HTTP ${res.status} ${text.slice(0, 200)}`);
  return text ? JSON.parse(text) : null;
}

/** Creates or updates the one comment that carries `marker`. Returns its id. */
export async function upsertComment(repo, number, marker, markdown) {
  const body = `${marker}\n${markdown}`;
  let existing = null;
  for (let page = 1; page <= 50 && !existing; page++) {
    const list = await github('GET', `/repos/${repo}/issues/${number}/comments?per_page=100&page=${page}`);
    existing = list.find((c) => typeof c.body === 'string' && c.body.startsWith(marker)) || null;
    if (list.length < 100) break;
  }
  if (existing) {
    await github('PATCH', `/repos/${repo}/issues/comments/${existing.id}`, { body });
    return existing.id;
  }
  const created = await github('POST', `/repos/${repo}/issues/${number}/comments`, { body });
  return created.id;
}

async function main() {
  const project = input('PROJECT') || env.SHIPLOG_PROJECT || '';
  const result = runCompare(project);
  if (!result) {
    output('verdict', 'error');
    return 0;
  }
  output('verdict', result.verdict);
  if (env.GITHUB_STEP_SUMMARY) appendFileSync(env.GITHUB_STEP_SUMMARY, `${result.markdown}\n`);
  const ev = event();
  const number = ev.pull_request?.number ?? ev.number ?? null;
  if (number && input('COMMENT') !== 'false' && env.GITHUB_REPOSITORY) {
    const marker = `<!-- shiplog-compare project=${project || 'default'} -->`;
    try {
      const id = await upsertComment(env.GITHUB_REPOSITORY, number, marker, result.markdown);
      output('comment-id', String(id));
    } catch (e) {
      warn(`could not write the pull-request comment (a fork's token is read-only): ${e.message}`);
    }
  }
  return result.verdict === 'breach' && input('FAIL_ON_BREACH') !== 'false' ? 1 : 0;
}

process.exitCode = await main();
