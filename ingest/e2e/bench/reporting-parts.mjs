// What the reporting of one build is made of, part by part, each measured in a fresh `node`
// process (as a build would pay it), medians over the runs:
//
//   node ingest/e2e/bench/reporting-parts.mjs [runs] [--app react-ts|react-ts-large]
//   (needs target/debug/shiplog, or SHIPLOG_BIN)
//
// - load: importing the plugin as shipped (unplugin-shiplog/esbuild: one bundled file, the
//   core inlined), after the bundler is loaded (esbuild, the lightest), as in a build;
// - git: reading the commit and branch from .git (the app lives inside this repository);
// - gzip: measuring the app's output (its Vite build, made once), every file gzipped on the
//   thread pool;
// - deliver: the one request to a running server, on the connection opened before, from
//   sending to its acknowledgement (the server answers once the event is durable: written
//   and fsynced).
//
// Wall and CPU (user + system) time of each part. CPU is what the build's process pays
// besides the bundler; wall is what a build waits when the part is on its path (load and
// the delivery always are; git runs while the bundler works; gzip overlaps the
// writing except with esbuild, whose outputs are known at its end).

import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadavg } from 'node:os';

const PARTS = ['load', 'git', 'gzip', 'deliver'];

/** One run, in this (fresh) process: prints `PARTS {…}`. */
async function child(root, dist, url) {
  const measure = async (fn) => {
    const c = process.cpuUsage();
    const t = performance.now();
    const value = await fn();
    const d = process.cpuUsage(c);
    return { wall: performance.now() - t, cpu: (d.user + d.system) / 1000, value };
  };
  await import('esbuild');
  const out = {};
  out.load = await measure(() => import('unplugin-shiplog/esbuild'));
  const core = await import('shiplog-collector-core');
  out.git = await measure(() => core.detectGit({}, root));
  core.preconnect(url); // as a build does when it starts
  const files = [];
  const walk = (d) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      if (e.isDirectory()) walk(join(d, e.name));
      else files.push(join(d, e.name));
    }
  };
  walk(dist);
  const sizes = await measure(() => {
    const sizer = core.createSizer();
    for (const f of files) sizer.add({ name: relative(dist, f), path: f });
    return sizer.result();
  });
  out.gzip = sizes;
  const s = sizes.value;
  const event = {
    id: `parts-${Date.now()}-${process.pid}`,
    kind: 'build',
    source: 'reporting-parts',
    time: new Date().toISOString(),
    project: 'reporting-parts',
    env: 'production',
    data: { tool: 'vite', success: true, duration_ms: 1, phases: [], bundle_bytes: s.bundleBytes, gzip_bytes: s.gzipBytes, chunks: s.chunks, assets: s.assets },
  };
  const spoolDir = join(dist, '..', 'spool');
  out.deliver = await measure(() => core.deliver(event, { url, timeoutMs: 10000, spoolDir }));
  if (!out.deliver.value.delivered) throw new Error(`not delivered: ${out.deliver.value.warning}`);
  const r = {};
  for (const k of PARTS) if (out[k]) r[k] = { wall: out[k].wall, cpu: out[k].cpu };
  r.files = files.length;
  r.bytes = s.bundleBytes;
  process.stdout.write(`PARTS ${JSON.stringify(r)}\n`);
}

if (process.argv[2] === '--child') {
  await child(...process.argv.slice(3, 6));
} else {
  const { cleanupAll, startServer, tempDir } = await import('../../test-support/helpers.js');
  const { APPS } = await import('./apps.mjs');
  const args = process.argv.slice(2);
  const runs = Number(args.find((a) => /^\d+$/.test(a)) || 15);
  const appIdx = args.indexOf('--app');
  const app = appIdx >= 0 ? args[appIdx + 1] : 'react-ts';
  const root = APPS[app].make();
  const here = fileURLToPath(import.meta.url);
  const out = tempDir('shiplog-parts-');
  const dist = join(out, 'dist');
  const b = spawnSync(process.execPath, [join(here, '..', 'build-app.mjs'), 'vite', root, dist], { cwd: root, encoding: 'utf8' });
  if (b.status !== 0) throw new Error(`vite build failed: ${b.stderr}`);
  const server = await startServer();
  const env = { ...process.env };
  for (const k of Object.keys(env)) if (k.startsWith('SHIPLOG_')) delete env[k];
  const rows = [];
  for (let i = 0; i < runs; i++) {
    const r = spawnSync(process.execPath, [here, '--child', root, dist, server.url], { cwd: root, encoding: 'utf8', env });
    const line = r.stdout.split('\n').find((l) => l.startsWith('PARTS '));
    if (r.status !== 0 || !line) throw new Error(`run failed (exit ${r.status}): ${r.stderr}`);
    rows.push(JSON.parse(line.slice('PARTS '.length)));
  }
  const median = (xs) => {
    const s = [...xs].sort((x, y) => x - y);
    const m = s.length >> 1;
    return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
  };
  console.log(`reporting parts on ${app} (${APPS[app].about}): ${runs} fresh processes, medians; load average ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
  console.log(`output measured: ${rows[0].files} files, ${(rows[0].bytes / 1024).toFixed(0)} KiB (its Vite build)`);
  for (const k of PARTS) {
    const has = rows.filter((r) => r[k]);
    console.log(`${k.padEnd(11)} wall ${median(has.map((r) => r[k].wall)).toFixed(1).padStart(6)} ms   CPU ${median(has.map((r) => r[k].cpu)).toFixed(1).padStart(6)} ms   (${has.length} runs)`);
  }
  await server.stop();
  await cleanupAll();
}
