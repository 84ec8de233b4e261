// Commit and branch: SHIPLOG_COMMIT / SHIPLOG_BRANCH, then the CI's, then the repository.
// The repository is read directly (.git/HEAD, refs, packed-refs, worktrees), when the build
// starts: no `git` process on the build's path. `git` is run only when the files say
// nothing (e.g. a reftable repository), asynchronously (node:child_process is loaded then
// only).

import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';

import { detectCiRun } from './ci.js';

const get = (env, k) => (env[k] && String(env[k]).trim()) || null;

// Synchronous reads: a dozen small files, each read in microseconds, where node:fs/promises
// pays four thread-pool round trips per file (open, stat, read, close): measured, the
// repository read cost a build 15 ms of CPU that way.
async function readText(p) {
  try {
    return readFileSync(p, 'utf8').trim();
  } catch {
    return null;
  }
}

/** The .git directory holding `cwd` and the common dir (worktrees share refs there). */
async function findGitDir(cwd) {
  let dir = resolve(cwd);
  for (let i = 0; i < 64; i++) {
    const dotgit = join(dir, '.git');
    const head = await readText(join(dotgit, 'HEAD'));
    if (head !== null) return { gitDir: dotgit, commonDir: dotgit };
    const file = await readText(dotgit);
    if (file && file.startsWith('gitdir:')) {
      let gitDir = file.slice('gitdir:'.length).trim();
      if (!isAbsolute(gitDir)) gitDir = resolve(dir, gitDir);
      const common = await readText(join(gitDir, 'commondir'));
      const commonDir = common ? (isAbsolute(common) ? common : resolve(gitDir, common)) : gitDir;
      return { gitDir, commonDir };
    }
    const up = dirname(dir);
    if (up === dir) return null;
    dir = up;
  }
  return null;
}

async function resolveRef(dirs, ref) {
  for (const d of [dirs.gitDir, dirs.commonDir]) {
    const v = await readText(join(d, ref));
    if (v && /^[0-9a-f]{40,64}$/.test(v)) return v;
  }
  const packed = await readText(join(dirs.commonDir, 'packed-refs'));
  if (packed) {
    for (const line of packed.split('\n')) {
      const [sha, name] = line.split(' ');
      if (name === ref && /^[0-9a-f]{40,64}$/.test(sha)) return sha;
    }
  }
  return null;
}

async function gitCommand(args, cwd) {
  const { execFile } = await import('node:child_process');
  return new Promise((done) => {
    try {
      execFile('git', args, { cwd, encoding: 'utf8', timeout: 2000, windowsHide: true }, (err, out) => {
        done(err ? null : String(out).trim() || null);
      });
    } catch {
      done(null);
    }
  });
}

/** Commit and branch of the repository at `cwd` (nulls outside one). */
export async function readRepository(cwd) {
  const dirs = await findGitDir(cwd);
  if (!dirs) return { commit: null, branch: null };
  const head = await readText(join(dirs.gitDir, 'HEAD'));
  if (!head) return { commit: null, branch: null };
  if (/^[0-9a-f]{40,64}$/.test(head)) return { commit: head, branch: null }; // detached
  if (head.startsWith('ref:')) {
    const ref = head.slice(4).trim();
    const branch = ref.startsWith('refs/heads/') ? ref.slice('refs/heads/'.length) : null;
    let commit = await resolveRef(dirs, ref);
    if (!commit && ref !== 'refs/heads/.invalid') commit = await gitCommand(['rev-parse', 'HEAD'], cwd);
    return { commit, branch };
  }
  // Unknown layout: ask git.
  const commit = await gitCommand(['rev-parse', 'HEAD'], cwd);
  const b = await gitCommand(['rev-parse', '--abbrev-ref', 'HEAD'], cwd);
  return { commit, branch: b && b !== 'HEAD' ? b : null };
}

/**
 * @param {Record<string, string | undefined>} env
 * @param {string} cwd
 * @param {{commit?: string, branch?: string} | null} [ci] the detected CI run (default: from env)
 */
export async function detectGit(env, cwd, ci = detectCiRun(env)) {
  let commit = get(env, 'SHIPLOG_COMMIT') || ci?.commit || null;
  let branch = get(env, 'SHIPLOG_BRANCH') || ci?.branch || null;
  if (!commit || !branch) {
    const repo = await readRepository(cwd);
    commit = commit || repo.commit;
    branch = branch || repo.branch;
  }
  return { commit, branch };
}
