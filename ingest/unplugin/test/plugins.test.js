// Real builds with webpack 5, Rspack, Rollup 4 and esbuild (from the registry) against a
// real shiplog server (target/debug/shiplog): the event's chunks and assets are the files
// the bundler wrote, byte for byte and gzip for gzip; with the server down the build still
// succeeds and the event is spooled, then sent by the next build; a failed build is
// reported as failed and the bundler's own error is left as it was.

import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';

import {
  breakFixture,
  cleanupAll,
  closedPort,
  filesOnDisk,
  fixtureCopy,
  gzipSizeOf,
  isolateEnv,
  query,
  serverCounters,
  shiplogBin,
  startServer,
  tempDir,
  withEnv,
} from '../../test-support/helpers.js';
import { BUNDLERS } from './bundlers.js';

const FIXTURE = join(dirname(fileURLToPath(import.meta.url)), 'fixture');

let restoreEnv = () => {};
let server;
before(async () => {
  shiplogBin();
  restoreEnv = isolateEnv();
  server = await startServer();
});
after(async () => {
  restoreEnv();
  await cleanupAll();
});

/** Builds with the plugin; resolves with the build error and the plugin's events. */
async function build(name, { root = FIXTURE, plugin = {}, fromIndex = false } = {}) {
  const outDir = tempDir('shiplog-out-');
  const events = [];
  const lines = [];
  const started = Date.now();
  const error = await BUNDLERS[name].build({
    root,
    outDir,
    plugin: { onEvent: (e, o) => events.push({ event: e, outcome: o }), ...plugin },
    fromIndex,
  });
  return { error, events, outDir, lines, ms: Date.now() - started };
}

/** Polls the builds view until the event's row is there; checks its chunks. */
async function assertQueryable(event) {
  const deadline = Date.now() + 20000;
  for (;;) {
    const res = await query(server.url, `SELECT id, bundle_bytes, chunks FROM builds WHERE id = '${event.id}'`);
    if (res.rows.length === 1) {
      const [id, bytes, chunks] = res.rows[0];
      assert.equal(id, event.id);
      assert.equal(Number(bytes), event.data.bundle_bytes);
      assert.deepEqual(
        chunks.map((c) => [c.name, Number(c.bytes), Number(c.gzip_bytes)]),
        event.data.chunks.map((c) => [c.name, c.bytes, c.gzip_bytes]),
      );
      return;
    }
    if (Date.now() > deadline) assert.fail(`build ${event.id} not in the builds view`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

for (const name of Object.keys(BUNDLERS)) {
  describe(name, () => {
    it('reports one build whose chunks and assets are the files it wrote', async () => {
      const ci = { GITHUB_ACTIONS: 'true', GITHUB_SHA: 'c0ffee'.padEnd(40, '0'), GITHUB_REF_NAME: 'main', GITHUB_RUN_ID: '5150', GITHUB_REPOSITORY: 'acme/web' };
      const r = await withEnv(ci, () => build(name, { plugin: { url: server.url, spoolDir: tempDir() } }));
      assert.equal(r.error, null, `build failed: ${r.error?.message}`);
      assert.equal(r.events.length, 1, 'one event per build');
      const { event, outcome } = r.events[0];
      assert.equal(outcome.delivered, true, JSON.stringify(outcome));
      assert.equal(event.kind, 'build');
      assert.equal(event.source, BUNDLERS[name].source);
      assert.equal(event.project, 'shiplog-bundler-fixture');
      assert.equal(event.commit, ci.GITHUB_SHA);
      assert.equal(event.branch, 'main');
      const d = event.data;
      assert.equal(d.tool, name);
      assert.match(d.tool_version, /^\d+\.\d+\.\d+/);
      assert.equal(d.success, true);
      assert.equal(d.ci.provider, 'github');
      assert.equal(d.ci.run_id, '5150');
      assert.ok(Number.isInteger(d.duration_ms) && d.duration_ms > 0 && d.duration_ms <= r.ms);
      const phaseSum = d.phases.reduce((s, p) => s + p.duration_ms, 0);
      assert.ok(phaseSum <= d.duration_ms + 4, `phases ${JSON.stringify(d.phases)} fit in ${d.duration_ms} ms`);
      if (name === 'webpack' || name === 'rspack') assert.deepEqual(d.phases.map((p) => p.name), ['compile', 'make', 'seal', 'emit']);
      if (name === 'rollup') assert.deepEqual(d.phases.map((p) => p.name), ['config', 'transform', 'render', 'write']);
      assert.ok(d.modules_transformed >= 3, `modules_transformed ${d.modules_transformed}`);

      const disk = filesOnDisk(r.outDir);
      const diskChunks = Object.keys(disk).filter((f) => /\.m?js$/.test(f)).sort();
      const diskAssets = Object.keys(disk).filter((f) => !/\.m?js$/.test(f)).sort();
      assert.ok(diskChunks.length >= 2, `the dynamic import makes a second chunk: ${diskChunks}`);
      assert.deepEqual(d.chunks.map((c) => c.name), diskChunks);
      assert.deepEqual(d.assets.map((a) => a.name), diskAssets);
      for (const c of [...d.chunks, ...d.assets]) {
        assert.equal(c.bytes, disk[c.name], `bytes of ${c.name}`);
        assert.equal(c.gzip_bytes, gzipSizeOf(join(r.outDir, c.name)), `gzip bytes of ${c.name}`);
      }
      assert.equal(d.bundle_bytes, Object.values(disk).reduce((s, n) => s + n, 0));
      assert.equal(d.gzip_bytes, [...d.chunks, ...d.assets].reduce((s, x) => s + x.gzip_bytes, 0));
      assert.equal(d.chunks.filter((c) => c.is_entry).length, 1, `one entry chunk: ${JSON.stringify(d.chunks)}`);
      assert.equal(d.chunks.filter((c) => c.dynamic_import).length, 1, 'one chunk loaded on demand');
      await assertQueryable(event);
    });

    it('still builds with the server down, spools, and the next build sends the spool', async () => {
      const spoolDir = join(tempDir(), 'spool');
      const before = await serverCounters(server.url);
      const down = await build(name, { plugin: { url: `http://127.0.0.1:${await closedPort()}`, spoolDir } });
      assert.equal(down.error, null, 'the build succeeds');
      assert.equal(down.events[0].outcome.spooled, true);
      assert.equal(readdirSync(spoolDir).filter((f) => f.endsWith('.json')).length, 1);
      const up = await build(name, { plugin: { url: server.url, spoolDir } });
      assert.equal(up.error, null);
      assert.equal(up.events[0].outcome.spoolSent, 1);
      assert.deepEqual(readdirSync(spoolDir).filter((f) => f.endsWith('.json')), []);
      const now = await serverCounters(server.url);
      assert.equal(now.accepted - before.accepted, 2, 'the spooled event and the new one');
      await assertQueryable(down.events[0].event);
    });

    it("is the same plugin from the package's main entry (unplugin's factory)", async () => {
      const viaEntry = await build(name, { plugin: { url: server.url, spoolDir: tempDir() } });
      const viaIndex = await build(name, { plugin: { url: server.url, spoolDir: tempDir() }, fromIndex: true });
      assert.equal(viaIndex.error, null);
      assert.equal(viaIndex.events.length, 1);
      const [a, b] = [viaEntry, viaIndex].map((r) => r.events[0].event);
      assert.equal(viaIndex.events[0].outcome.delivered, true);
      assert.equal(b.source, a.source);
      assert.deepEqual(
        b.data.chunks.map((c) => [c.name, c.bytes, c.gzip_bytes, c.is_entry]),
        a.data.chunks.map((c) => [c.name, c.bytes, c.gzip_bytes, c.is_entry]),
      );
      assert.equal(b.data.tool, a.data.tool);
      assert.equal(b.data.modules_total, a.data.modules_total);
    });

    it('reports a failed build and leaves the error to the bundler', async () => {
      const root = fixtureCopy(FIXTURE);
      breakFixture(root);
      const plain = await BUNDLERS[name].build({ root, outDir: tempDir('shiplog-out-'), plugin: null });
      assert.ok(plain, 'the broken fixture fails to build');
      const r = await build(name, { root, plugin: { url: server.url, spoolDir: tempDir() } });
      assert.ok(r.error, 'the build still fails');
      assert.equal(r.error.constructor, plain.constructor);
      assert.equal(r.events.length, 1);
      const { event, outcome } = r.events[0];
      assert.equal(outcome.delivered, true);
      assert.equal(event.data.success, false);
      assert.match(event.data.error, /broken/i);
      assert.ok(Buffer.byteLength(event.data.error) <= 2048);
    });
  });
}
