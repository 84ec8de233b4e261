// The compare Action end to end: its action.yml step run by bash as a runner would (inputs
// substituted), the real shiplog binary and server, and a local HTTP server standing in for
// the GitHub REST API that records every request. One pull request, two pushes: the comment
// is posted, then updated in place; the recorded bodies and the job summary are checked.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';

import { parse } from 'yaml';

import { cleanupAll, isolateEnv, shiplogBin, startServer, tempDir } from '../../test-support/helpers.js';

const ACTION_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', 'compare');

/** A GitHub REST API stand-in: issue comments in memory, every request recorded. */
async function githubRecorder() {
  const requests = [];
  const comments = [{ id: 1, body: 'LGTM, but see the bundle size' }];
  let next = 100;
  const server = http.createServer((req, res) => {
    let text = '';
    req.on('data', (c) => (text += c));
    req.on('end', () => {
      const body = text ? JSON.parse(text) : null;
      // The API base URL given to the action ends in /api/v3 (GitHub Enterprise style).
      if (!req.url.startsWith('/api/v3/')) {
        res.writeHead(404).end();
        return;
      }
      req.url = req.url.slice('/api/v3'.length);
      requests.push({ method: req.method, url: req.url, headers: req.headers, body });
      const send = (status, v) => {
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(JSON.stringify(v));
      };
      let m;
      if (req.method === 'GET' && (m = req.url.match(/^\/repos\/acme\/web\/issues\/7\/comments\?per_page=100&page=(\d+)$/))) {
        return send(200, m[1] === '1' ? comments : []);
      }
      if (req.method === 'POST' && req.url === '/repos/acme/web/issues/7/comments') {
        const c = { id: next++, body: body.body };
        comments.push(c);
        return send(201, c);
      }
      if (req.method === 'PATCH' && (m = req.url.match(/^\/repos\/acme\/web\/issues\/comments\/(\d+)$/))) {
        const c = comments.find((x) => x.id === Number(m[1]));
        if (!c) return send(404, { message: 'Not Found' });
        c.body = body.body;
        return send(200, c);
      }
      send(404, { message: `no route ${req.method} ${req.url}` });
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${server.address().port}/api/v3`,
    requests,
    comments,
    close: () =>
      new Promise((r) => {
        server.closeAllConnections();
        server.close(r);
      }),
  };
}

/** Runs the action's step as the runner does: `${{ … }}` substituted, env set, bash. */
async function runAction(inputs, env) {
  const action = parse(readFileSync(join(ACTION_DIR, 'action.yml'), 'utf8'));
  const values = {};
  for (const [name, spec] of Object.entries(action.inputs)) {
    values[name] = inputs[name] ?? (String(spec.default ?? '').includes('${{') ? '' : spec.default ?? '');
  }
  const expr = (s) =>
    String(s).replace(/\$\{\{\s*([^}]+?)\s*\}\}/g, (_, e) => {
      if (e.startsWith('inputs.')) return values[e.slice('inputs.'.length)] ?? '';
      if (e === 'github.action_path') return ACTION_DIR;
      throw new Error(`unknown expression ${e}`);
    });
  const [step] = action.runs.steps;
  const stepEnv = Object.fromEntries(Object.entries(step.env).map(([k, v]) => [k, expr(v)]));
  // Asynchronously: the GitHub stand-in answers from this same process.
  const child = spawn('bash', ['-e', '-c', expr(step.run)], { env: { ...process.env, ...env, ...stepEnv } });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (b) => (stdout += b));
  child.stderr.on('data', (b) => (stderr += b));
  return new Promise((done) => child.on('close', (status) => done({ status, stdout, stderr })));
}

let restoreEnv = () => {};
after(async () => {
  restoreEnv();
  await cleanupAll();
});

describe('compare action', () => {
  let server;
  let gh;
  before(async () => {
    shiplogBin();
    restoreEnv = isolateEnv();
    const dir = tempDir('shiplog-action-');
    const config = join(dir, 'shiplog.toml');
    writeFileSync(config, '[[budgets]]\nproject = "web"\ngrowth_percent = 10\n');
    server = await startServer(join(dir, 'data'), ['--config', config]);
    gh = await githubRecorder();
  });
  // The stand-in's listening socket would keep this test's process alive: node --test
  // would wait for it forever.
  after(() => gh?.close());

  async function postBuild(id, commit, branch, chunks) {
    const res = await fetch(`${server.url}/v1/events`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        id,
        kind: 'build',
        source: 'vite-plugin',
        project: 'web',
        commit,
        branch,
        time: new Date().toISOString(),
        data: {
          tool: 'vite',
          success: true,
          duration_ms: 30000,
          bundle_bytes: chunks.reduce((s, c) => s + c.bytes, 0),
          gzip_bytes: chunks.reduce((s, c) => s + c.gzip_bytes, 0),
          chunks,
        },
      }),
    });
    assert.equal(res.status, 202);
  }

  it('posts the comparison as one comment, then updates it on the next push', async () => {
    const work = tempDir('shiplog-runner-');
    const eventPath = join(work, 'event.json');
    writeFileSync(eventPath, JSON.stringify({ number: 7, pull_request: { number: 7 } }));
    const summary = join(work, 'summary.md');
    writeFileSync(summary, '');
    const binDir = join(work, 'bin');
    mkdirSync(binDir);
    const runnerEnv = (sha, out) => ({
      GITHUB_ACTIONS: 'true',
      GITHUB_REPOSITORY: 'acme/web',
      GITHUB_EVENT_PATH: eventPath,
      GITHUB_STEP_SUMMARY: summary,
      GITHUB_OUTPUT: out,
      GITHUB_SHA: sha,
      GITHUB_BASE_REF: 'main',
      GITHUB_HEAD_REF: 'feature/chart',
    });
    const inputs = { project: 'web', url: server.url, binary: shiplogBin(), 'github-token': 'ghs_test123', 'api-url': gh.url };

    await postBuild('main-1', 'a'.repeat(40), 'main', [{ name: 'assets/index-Aa11aa1A.js', bytes: 100000, gzip_bytes: 30000 }]);
    await postBuild('pr-1', 'b'.repeat(40), 'feature/chart', [
      { name: 'assets/index-Bb22bb2B.js', bytes: 104000, gzip_bytes: 31000 },
    ]);
    const out1 = join(work, 'out1');
    writeFileSync(out1, '');
    const r1 = await runAction(inputs, runnerEnv('b'.repeat(40), out1));
    assert.equal(r1.status, 0, `within budget: ${r1.stdout}\n${r1.stderr}`);
    assert.match(readFileSync(out1, 'utf8'), /^verdict=pass$/m);
    const posts = gh.requests.filter((r) => r.method === 'POST');
    assert.equal(posts.length, 1, 'one comment created');
    assert.equal(posts[0].url, '/repos/acme/web/issues/7/comments');
    assert.equal(posts[0].headers.authorization, 'Bearer ghs_test123');
    assert.equal(posts[0].headers['x-github-api-version'], '2022-11-28');
    const first = posts[0].body.body;
    assert.ok(first.startsWith('<!-- shiplog-compare project=web -->\n### ✅ shiplog: web — bbbbbbb against `main` (aaaaaaa)'), first);
    assert.match(first, /\| Bundle \| 100\.0 kB \| 104\.0 kB \| \+4\.0 kB \(\+4\.0%\) \|/);
    assert.match(first, /\| grown `assets\/index-Bb22bb2B\.js` \| 100\.0 kB \| 104\.0 kB \| \+4\.0 kB \(\+4\.0%\) \|/);
    const id = Number(readFileSync(out1, 'utf8').match(/^comment-id=(\d+)$/m)[1]);

    // The next push grows the bundle past the budget: the same comment is updated.
    await postBuild('pr-2', 'c'.repeat(40), 'feature/chart', [
      { name: 'assets/index-Cc33cc3C.js', bytes: 104000, gzip_bytes: 31000 },
      { name: 'assets/chart-Dd44dd4D.js', bytes: 20000, gzip_bytes: 7000 },
    ]);
    const out2 = join(work, 'out2');
    writeFileSync(out2, '');
    const r2 = await runAction(inputs, runnerEnv('c'.repeat(40), out2));
    assert.equal(r2.status, 1, `a breach fails the step: ${r2.stdout}\n${r2.stderr}`);
    assert.match(readFileSync(out2, 'utf8'), /^verdict=breach$/m);
    assert.equal(gh.requests.filter((r) => r.method === 'POST').length, 1, 'no second comment');
    const patches = gh.requests.filter((r) => r.method === 'PATCH');
    assert.equal(patches.length, 1);
    assert.equal(patches[0].url, `/repos/acme/web/issues/comments/${id}`);
    const second = patches[0].body.body;
    assert.ok(second.startsWith('<!-- shiplog-compare project=web -->\n### ❌ shiplog: web — ccccccc'), second);
    assert.match(second, /\| added `assets\/chart-Dd44dd4D\.js` \| – \| 20\.0 kB \| \+20\.0 kB \|/);
    assert.match(second, /\| bundle_growth_percent \| \+10\.0% \| \+24\.0% \| ❌ \|/);
    assert.deepEqual(gh.comments.map((c) => c.id), [1, id], "the reviewer's comment untouched, ours once");
    assert.equal(gh.comments[1].body, second);

    // The job summary got both comparisons.
    const s = readFileSync(summary, 'utf8');
    assert.equal(s.match(/### \S+ shiplog: web/g).length, 2, s);

    // fail-on-breach false, and no comment: the step passes, nothing is written to GitHub.
    const before = gh.requests.length;
    const r3 = await runAction({ ...inputs, 'fail-on-breach': 'false', comment: 'false' }, runnerEnv('c'.repeat(40), join(work, 'out3')));
    assert.equal(r3.status, 0, r3.stderr);
    assert.equal(gh.requests.length, before);

    // shiplog unreachable: a warning, the step passes.
    const r4 = await runAction({ ...inputs, url: 'http://127.0.0.1:9' }, runnerEnv('c'.repeat(40), join(work, 'out4')));
    assert.equal(r4.status, 0);
    assert.match(r4.stdout, /::warning title=shiplog compare::shiplog compare failed/);
  });
});
