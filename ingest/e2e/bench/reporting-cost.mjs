// The cost of reporting: the same app built with and without a shiplog plugin, alternating
// (ABBA order, so a drift of the machine's load hits both sides alike), each build a fresh
// `node` process, against a running shiplog server (a real delivery, acknowledged).
//
//   node ingest/e2e/bench/reporting-cost.mjs [runs] [--apps a,b] [--bundlers x,y]
//   (needs target/debug/shiplog, or SHIPLOG_BIN)
//
// Apps (apps.mjs): `react-ts`, the app `create-vite --template react-ts` makes, and
// `react-ts-large`, the same app with generated lazy routes. Bundlers (build-app.mjs):
// vite, webpack, rspack, rollup, esbuild.
//
// Figures per app and bundler, medians over the runs: the wall time of the whole process
// (spawn to exit: node's start, module loading, the build, the delivery, the exit; what a
// user waits for), the CPU time of the process (user + system, all threads: on a loaded
// machine a steadier figure than wall time), and the peak RSS. The ratios are with /
// without, measured in the same run. Every build with the plugin must have
// delivered its event: the server's accepted-events counter is checked.

import { spawnSync } from 'node:child_process';
import { readdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadavg } from 'node:os';

import { ciProviders } from 'shiplog-collector-core';

import { cleanupAll, serverCounters, startServer, tempDir } from '../../test-support/helpers.js';
import { APPS } from './apps.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
const BUILD = join(HERE, 'build-app.mjs');
const BUNDLERS = ['vite', 'webpack', 'rspack', 'rollup', 'esbuild'];

const args = process.argv.slice(2);
const flag = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1].split(',') : dflt;
};
const runs = Number(args.find((a) => /^\d+$/.test(a)) || 10);
const apps = flag('--apps', Object.keys(APPS));
const bundlers = flag('--bundlers', BUNDLERS);

// The builds run outside any CI and without SHIPLOG_* settings: the options say everything.
const env = { ...process.env };
for (const k of ['CI', ...Object.keys(env).filter((k) => k.startsWith('SHIPLOG_'))]) delete env[k];
for (const p of ciProviders()) delete env[p.detect.var];

function once(bundler, root, plugin) {
  const out = tempDir('shiplog-bench-out-');
  const argv = [BUILD, bundler, root, join(out, 'dist')];
  if (plugin) argv.push(JSON.stringify({ ...plugin, spoolDir: join(out, 'spool') }));
  const t0 = process.hrtime.bigint();
  const r = spawnSync(process.execPath, argv, { cwd: root, encoding: 'utf8', env, maxBuffer: 64 << 20 });
  const wall = Number(process.hrtime.bigint() - t0) / 1e6;
  if (r.status !== 0) throw new Error(`${bundler} build failed (exit ${r.status}):\n${r.stderr}\n${r.stdout}`);
  const line = r.stdout.split('\n').find((l) => l.startsWith('RESULT '));
  const inner = JSON.parse(line.slice('RESULT '.length));
  let spooled = 0;
  try {
    spooled = readdirSync(join(out, 'spool')).filter((f) => f.endsWith('.json')).length;
  } catch {
    /* no spool folder: nothing spooled */
  }
  rmSync(out, { recursive: true, force: true });
  return { wall, cpu: inner.cpu, rss: inner.rss / 1024, spooled, warnings: (r.stdout + r.stderr).split('\n').filter((l) => l.includes('[shiplog]') && !/sent/.test(l)) };
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

const server = await startServer();
console.log(`reporting cost: ${runs} builds with and ${runs} without the plugin per app and bundler, alternating (ABBA), fresh processes`);
console.log(`node ${process.versions.node}, load average at start ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
const rows = [];
for (const app of apps) {
  const root = APPS[app].make();
  console.log(`\n${app}: ${APPS[app].about}`);
  console.log('bundler   process wall without → with (ratio, added)   CPU without → with (ratio, added)   peak RSS without → with');
  for (const bundler of bundlers) {
    const plugin = { url: server.url };
    once(bundler, root, null); // warm the file cache and the bundler's own caches
    once(bundler, root, plugin);
    const before = (await serverCounters(server.url)).accepted;
    const without = [];
    const withP = [];
    for (let i = 0; i < runs; i++) {
      const order = i % 2 === 0 ? [false, true] : [true, false];
      for (const w of order) (w ? withP : without).push(once(bundler, root, w ? plugin : null));
    }
    const accepted = (await serverCounters(server.url)).accepted - before;
    const spooled = withP.reduce((s, x) => s + x.spooled, 0);
    const warnings = [...new Set(withP.flatMap((x) => x.warnings))];
    const m = (xs, k) => median(xs.map((x) => x[k]));
    const row = {
      app,
      bundler,
      wall0: m(without, 'wall'),
      wall1: m(withP, 'wall'),
      cpu0: m(without, 'cpu'),
      cpu1: m(withP, 'cpu'),
      rss0: m(without, 'rss'),
      rss1: m(withP, 'rss'),
      accepted,
      spooled,
    };
    rows.push(row);
    console.log(
      `${bundler.padEnd(9)} ${row.wall0.toFixed(0).padStart(6)} → ${row.wall1.toFixed(0).padStart(6)} ms (${(row.wall1 / row.wall0).toFixed(3)}, ${(row.wall1 - row.wall0).toFixed(0).padStart(4)} ms)` +
        `   ${row.cpu0.toFixed(0).padStart(6)} → ${row.cpu1.toFixed(0).padStart(6)} ms (${(row.cpu1 / row.cpu0).toFixed(3)}, ${(row.cpu1 - row.cpu0).toFixed(0).padStart(4)} ms)` +
        `   ${row.rss0.toFixed(0)} → ${row.rss1.toFixed(0)} MiB (${(row.rss1 - row.rss0).toFixed(1)})` +
        `   load ${loadavg()[0].toFixed(1)}` +
        (accepted !== runs || spooled ? `   DELIVERY: ${accepted}/${runs} accepted, ${spooled} spooled` : '') +
        (warnings.length ? `\n          plugin warnings: ${warnings.join(' | ')}` : ''),
    );
  }
}
console.log(`\nload average at end ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
if (process.env.BENCH_JSON) console.log(`JSON ${JSON.stringify(rows)}`);
await server.stop();
await cleanupAll();
