// The shared CI table: every vector of ci-vectors.json (the Rust side runs the same ones),
// and commit/branch detection from CI variables and from the repository's files.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';

import { ciProviders, detectCi, detectCiRun, detectGit, readRepository, renderTemplate } from 'shiplog-collector-core';
import { cleanupAll, tempDir } from '../../test-support/helpers.js';

const vectors = JSON.parse(readFileSync(new URL('./ci-vectors.json', import.meta.url), 'utf8')).vectors;

after(cleanupAll);

describe('CI detection table', () => {
  const covered = new Set();
  for (const v of vectors) {
    it(v.name, () => {
      assert.deepEqual(detectCiRun(v.env), v.expect);
      if (v.expect) covered.add(v.expect.provider);
    });
  }

  it('has ten providers, each with a vector', () => {
    const ids = ciProviders().map((p) => p.id);
    assert.equal(ids.length, 10);
    assert.deepEqual([...covered].sort(), [...ids].sort());
  });

  it('gives data.ci with the extra fields', () => {
    const gh = vectors.find((v) => v.expect?.provider === 'github');
    assert.deepEqual(detectCi(gh.env), {
      provider: 'github',
      run_id: '11823044512',
      url: 'https://github.com/acme/web-app/actions/runs/11823044512/attempts/2',
      attempt: 2,
      workflow: 'CI',
      repository: 'acme/web-app',
      job: 'build',
    });
    assert.equal(detectCi({}), null);
  });

  it('reads templates as documented', () => {
    const env = { A: 'x y/z', B: '', N: '0012', M: '12a' };
    assert.equal(renderTemplate('{A|uri}', env), 'x%20y%2Fz');
    assert.equal(renderTemplate('pre-{B}', env), null);
    assert.equal(renderTemplate('{N|int}', env), 12);
    assert.equal(renderTemplate('{M|int}', env), '12a');
    assert.equal(renderTemplate('#{N|int}', env), '#0012');
  });
});

describe('commit and branch', () => {
  it('takes them from SHIPLOG_*, then the CI, then the repository', async () => {
    const dir = tempDir(); // not a git repository
    assert.deepEqual(await detectGit({ GITLAB_CI: 'true', CI_COMMIT_SHA: 'abc', CI_COMMIT_REF_NAME: 'feat/x' }, dir), { commit: 'abc', branch: 'feat/x' });
    assert.deepEqual(await detectGit({ GITHUB_ACTIONS: 'true', GITHUB_SHA: 'g1', GITHUB_REF_NAME: '12/merge', GITHUB_HEAD_REF: 'feat/pay' }, dir), { commit: 'g1', branch: 'feat/pay' });
    assert.deepEqual(await detectGit({ SHIPLOG_COMMIT: 's1', SHIPLOG_BRANCH: 'b', GITHUB_ACTIONS: 'true', GITHUB_SHA: 'g1' }, dir), { commit: 's1', branch: 'b' });
    assert.deepEqual(await detectGit({}, dir), { commit: null, branch: null });
  });

  it('reads a repository without running git: loose ref, packed ref, detached, worktree', async () => {
    const repo = tempDir();
    const git = (...args) => execFileSync('git', args, { cwd: repo, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    git('init', '-q', '-b', 'trunk');
    git('-c', 'user.email=a@b', '-c', 'user.name=a', 'commit', '-q', '--allow-empty', '-m', 'one');
    const head = git('rev-parse', 'HEAD');
    mkdirSync(join(repo, 'sub', 'deeper'), { recursive: true });
    const path = process.env.PATH;
    process.env.PATH = tempDir(); // no git binary: the files alone must do
    try {
      assert.deepEqual(await readRepository(join(repo, 'sub', 'deeper')), { commit: head, branch: 'trunk' });
      process.env.PATH = path;
      git('pack-refs', '--all');
      process.env.PATH = tempDir();
      assert.deepEqual(await readRepository(repo), { commit: head, branch: 'trunk' }, 'packed-refs');
      writeFileSync(join(repo, '.git', 'HEAD'), `${head}\n`);
      assert.deepEqual(await readRepository(repo), { commit: head, branch: null }, 'detached HEAD has no branch');
      process.env.PATH = path;
      git('checkout', '-q', 'trunk');
      const wt = join(tempDir(), 'wt');
      git('worktree', 'add', '-q', '-b', 'side', wt);
      process.env.PATH = tempDir();
      assert.deepEqual(await readRepository(wt), { commit: head, branch: 'side' }, 'a worktree (.git is a file)');
    } finally {
      process.env.PATH = path;
    }
  });
});
