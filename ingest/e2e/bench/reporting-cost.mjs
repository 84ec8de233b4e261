// The cost of reporting: the same app built with and without a shiplog plugin, alternating,
// each build a fresh `node` process (wall time and peak RSS of the process), against a
// running server (a real delivery). Prints the medians and the ratio.
//
//   node ingest/e2e/bench/reporting-cost.mjs [runs]     (needs target/debug/shiplog)
//
// Apps: the Vite plugin's fixture (ingest/vite-plugin/test/fixture) with Vite 8, and the
// bundler fixture with webpack, Rspack, Rollup and esbuild.

import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { cleanupAll, INGEST_DIR, startServer, tempDir } from '../../test-support/helpers.js';

const runs = Number(process.argv[2] || 10);
const HERE = dirname(fileURLToPath(import.meta.url));

const script = (bundler, withPlugin, out, url) => {
  const vite = `
    const { build } = await import('vite');
    const shiplog = (await import('vite-plugin-shiplog')).default;
    await build({ root: ${JSON.stringify(join(INGEST_DIR, 'vite-plugin', 'test', 'fixture'))}, configFile: false, logLevel: 'silent',
      plugins: ${withPlugin ? `[shiplog({ url: ${JSON.stringify(url)}, spoolDir: ${JSON.stringify(join(out, 'spool'))} })]` : '[]'},
      build: { outDir: ${JSON.stringify(join(out, 'dist'))}, emptyOutDir: true } });`;
  const other = `
    const { BUNDLERS } = await import(${JSON.stringify(join(INGEST_DIR, 'unplugin', 'test', 'bundlers.js'))});
    const e = await BUNDLERS.${bundler}.build({ root: ${JSON.stringify(join(INGEST_DIR, 'unplugin', 'test', 'fixture'))}, outDir: ${JSON.stringify(join(out, 'dist'))},
      plugin: ${withPlugin ? `{ url: ${JSON.stringify(url)}, spoolDir: ${JSON.stringify(join(out, 'spool'))} }` : 'null'} });
    if (e) throw e;`;
  return bundler === 'vite' ? vite : other;
};

function once(bundler, withPlugin, url) {
  const out = tempDir('shiplog-bench-');
  const code = `const t0 = performance.now(); ${script(bundler, withPlugin, out, url)}
    process.stdout.write('RESULT ' + JSON.stringify({ ms: performance.now() - t0, rss: process.resourceUsage().maxRSS }));`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], { cwd: HERE, encoding: 'utf8', env: { ...process.env, SHIPLOG_URL: '' } });
  if (r.status !== 0) throw new Error(r.stderr);
  const t = JSON.parse(r.stdout.slice(r.stdout.lastIndexOf('RESULT ') + 7));
  return t;
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const server = await startServer();
console.log(`reporting cost, ${runs} builds each, alternating (median wall time of the build inside its process, peak RSS)`);
for (const bundler of ['vite', 'webpack', 'rspack', 'rollup', 'esbuild']) {
  once(bundler, false, server.url); // warm the file cache
  const without = [];
  const withP = [];
  for (let i = 0; i < runs; i++) {
    without.push(once(bundler, false, server.url));
    withP.push(once(bundler, true, server.url));
  }
  const m0 = median(without.map((x) => x.ms));
  const m1 = median(withP.map((x) => x.ms));
  const r0 = median(without.map((x) => x.rss)) / 1024;
  const r1 = median(withP.map((x) => x.rss)) / 1024;
  console.log(
    `${bundler.padEnd(8)} without ${m0.toFixed(0).padStart(5)} ms  with ${m1.toFixed(0).padStart(5)} ms  ` +
      `ratio ${(m1 / m0).toFixed(3)}  added ${(m1 - m0).toFixed(0)} ms  RSS ${r0.toFixed(0)} -> ${r1.toFixed(0)} MiB (+${(r1 - r0).toFixed(1)})`,
  );
}
await server.stop();
await cleanupAll();
