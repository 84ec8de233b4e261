// The end-to-end suite, run once per Vite major: real `vite build` (Vite's build() API)
// against a real shiplog server. `vite` is Vite 8 (Rolldown), `vite7` is Vite 7 (Rollup).

import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { dirname, join as joinPath } from 'node:path';
import { fileURLToPath } from 'node:url';

import shiplog from 'vite-plugin-shiplog';
import {
  blackhole,
  breakFixture,
  captureLogger,
  cleanupAll,
  closedPort,
  filesOnDisk,
  fixtureCopy,
  gitHead,
  gzipSizeOf,
  isolateEnv,
  query,
  repost,
  serverCounters,
  shiplogBin,
  startServer,
  tempDir,
  withEnv,
} from '../../test-support/helpers.js';

const FIXTURE = joinPath(dirname(fileURLToPath(import.meta.url)), 'fixture');

/**
 * @param {string} label e.g. 'vite 8 (rolldown)'
 * @param {string} specifier the package to import: 'vite' or 'vite7'
 * @param {{major: number, bundler: 'rolldown'|'rollup'}} expect
 */
export function viteSuite(label, specifier, expect) {
  describe(label, () => {
    /** @type {any} */
    let vite;
    let restoreEnv = () => {};

    before(async () => {
      shiplogBin(); // fail first, with a clear message, when the binary is missing
      vite = await import(specifier);
      assert.equal(Number(vite.version.split('.')[0]), expect.major, `${specifier} is Vite ${vite.version}`);
      restoreEnv = isolateEnv();
    });

    after(async () => {
      restoreEnv();
      await cleanupAll();
    });

    /**
     * One `vite build` with the plugin. Resolves with the events the plugin produced,
     * the outcome of each delivery, the logger, the wall time and the build error if any.
     */
    async function build({ root = FIXTURE, outDir = tempDir('shiplog-out-'), plugin = {}, sourcemap = false } = {}) {
      const events = [];
      const logger = captureLogger();
      const started = Date.now();
      let error = null;
      try {
        await vite.build({
          root,
          configFile: false,
          logLevel: 'warn', // the plugin's lines reach the custom logger at any level
          customLogger: logger,
          plugins: [shiplog({ onEvent: (e, o) => events.push({ event: e, outcome: o }), ...plugin })],
          build: { outDir, emptyOutDir: true, sourcemap },
        });
      } catch (e) {
        error = e;
      }
      return { events, logger, outDir, error, ms: Date.now() - started };
    }

    /** Builds the fixture without the plugin and returns Vite's error (for comparison). */
    async function buildWithoutPlugin(root) {
      try {
        await vite.build({ root, configFile: false, logLevel: 'silent', build: { outDir: tempDir('shiplog-out-'), emptyOutDir: true } });
      } catch (e) {
        return e;
      }
      return null;
    }

    /** The server holds exactly these events (and nothing else). */
    async function assertStored(server, expected) {
      const counters = await serverCounters(server.url);
      assert.equal(counters.accepted, expected.length, `server accepted ${counters.accepted} events, expected ${expected.length}`);
      assert.equal(counters.rejected, 0, 'server rejected an event');
      for (const e of expected) {
        const r = await repost(server.url, e);
        assert.equal(r.status, 202);
        assert.deepEqual(r.body, { accepted: 0, duplicates: 1, rejected: [] }, `event ${e.id} is not stored on the server`);
      }
      // The query API (DuckDB view `builds`): the event is queryable.
      const probe = await query(server.url, 'SELECT count(*) FROM builds').catch((e) => e);
      assert.ok(probe && !(probe instanceof Error), `POST /v1/query failed: ${probe}`);
      const deadline = Date.now() + 15000;
      for (;;) {
        const res = await query(server.url, 'SELECT * FROM builds');
        if (res && res.rows.length >= expected.length) {
          assert.equal(res.rows.length, expected.length, 'rows in the builds view');
          const idCol = res.columns.indexOf('id');
          if (idCol >= 0) {
            assert.deepEqual(res.rows.map((r) => r[idCol]).sort(), expected.map((e) => e.id).sort());
          }
          const bytesCol = res.columns.indexOf('bundle_bytes');
          const chunksCol = res.columns.indexOf('chunks');
          assert.ok(idCol >= 0 && bytesCol >= 0 && chunksCol >= 0, `builds view columns: ${res.columns}`);
          for (const e of expected) {
            const row = res.rows.find((r) => r[idCol] === e.id);
            assert.equal(row[bytesCol] === null ? null : Number(row[bytesCol]), e.data.bundle_bytes, 'bundle_bytes in the builds view');
            const chunks = row[chunksCol] ?? [];
            assert.equal(chunks.length, (e.data.chunks ?? []).length, 'chunk count in the builds view');
            assert.deepEqual(
              chunks.map((c) => [c.name, Number(c.bytes), Number(c.gzip_bytes)]),
              (e.data.chunks ?? []).map((c) => [c.name, c.bytes, c.gzip_bytes]),
              'chunk names and sizes in the builds view',
            );
          }
          return 'query';
        }
        if (Date.now() > deadline) assert.fail(`the builds view shows ${res?.rows.length} rows, expected ${expected.length}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    }

    it('reports one build event whose chunks and sizes match the files Vite wrote', async (t) => {
      const server = await startServer();
      const ci = {
        GITHUB_ACTIONS: 'true',
        GITHUB_SHA: '0123456789abcdef0123456789abcdef01234567',
        GITHUB_REF_NAME: 'main',
        GITHUB_RUN_ID: '11823044512',
        GITHUB_REPOSITORY: 'acme/web-app',
        GITHUB_SERVER_URL: 'https://github.com',
      };
      const r = await withEnv(ci, () => build({ plugin: { url: server.url, spoolDir: tempDir() }, sourcemap: true }));
      assert.equal(r.error, null, `build failed: ${r.error?.message}`);
      assert.equal(r.events.length, 1, 'one event per build');
      const { event, outcome } = r.events[0];
      assert.equal(outcome.delivered, true, JSON.stringify(outcome));
      assert.equal(outcome.status, 202);

      // Envelope.
      assert.equal(event.kind, 'build');
      assert.equal(event.source, 'vite-plugin');
      assert.equal(event.project, 'shiplog-fixture-app', 'project from the fixture package.json');
      assert.equal(event.env, 'production');
      assert.equal(event.commit, ci.GITHUB_SHA);
      assert.equal(event.branch, 'main');
      assert.match(event.id, /^github-11823044512-\d+-[0-9a-f]{12}$/);
      assert.ok(!Number.isNaN(Date.parse(event.time)) && event.time.endsWith('Z'));

      // Data.
      const d = event.data;
      assert.equal(d.tool, 'vite');
      assert.equal(d.tool_version, vite.version);
      assert.equal(d.bundler, expect.bundler);
      assert.ok(d.bundler_version, 'bundler version');
      assert.equal(d.mode, 'production');
      assert.equal(d.success, true);
      assert.equal(d.error, undefined);
      assert.deepEqual(d.ci, { provider: 'github', run_id: '11823044512', url: 'https://github.com/acme/web-app/actions/runs/11823044512', repository: 'acme/web-app' });
      assert.ok(Number.isInteger(d.duration_ms) && d.duration_ms > 0 && d.duration_ms <= r.ms, `duration ${d.duration_ms} within the build's ${r.ms} ms`);
      assert.deepEqual(d.phases.map((p) => p.name), ['config', 'transform', 'render', 'write']);
      for (const p of d.phases) assert.ok(Number.isInteger(p.duration_ms) && p.duration_ms >= 0, JSON.stringify(p));
      const phaseSum = d.phases.reduce((s, p) => s + p.duration_ms, 0);
      assert.ok(phaseSum <= d.duration_ms + 4, `phases (${phaseSum}) fit in duration_ms (${d.duration_ms})`);
      // main, greet, details, style.css, logo.svg, index.html + Vite's preload helper and polyfill.
      assert.ok(d.modules_transformed >= 6, `modules_transformed ${d.modules_transformed}`);
      assert.ok(d.modules_total >= d.modules_transformed);

      // Sizes against the disk. public/ files are copied by Vite outside the bundle; maps are apart.
      const disk = filesOnDisk(r.outDir);
      delete disk['robots.txt'];
      const maps = Object.keys(disk).filter((f) => f.endsWith('.map'));
      assert.ok(maps.length >= 2, 'source maps written');
      assert.equal(d.sourcemap_bytes, maps.reduce((s, f) => s + disk[f], 0));
      for (const f of maps) delete disk[f];

      const diskChunks = Object.keys(disk).filter((f) => f.endsWith('.js')).sort();
      const diskAssets = Object.keys(disk).filter((f) => !f.endsWith('.js')).sort();
      assert.ok(diskChunks.length >= 2, 'the dynamic import makes a second chunk');
      assert.deepEqual(d.chunks.map((c) => c.name), diskChunks);
      assert.deepEqual(d.assets.map((a) => a.name), diskAssets);
      for (const c of d.chunks) {
        assert.equal(c.bytes, disk[c.name], `bytes of ${c.name}`);
        assert.equal(c.gzip_bytes, gzipSizeOf(join(r.outDir, c.name)), `gzip bytes of ${c.name}`);
      }
      for (const a of d.assets) {
        assert.equal(a.bytes, disk[a.name], `bytes of ${a.name}`);
        assert.equal(a.gzip_bytes, gzipSizeOf(join(r.outDir, a.name)), `gzip bytes of ${a.name}`);
      }
      assert.ok(d.assets.some((a) => a.name.endsWith('.css')), 'css asset');
      assert.ok(d.assets.some((a) => a.name.endsWith('.svg')), 'svg asset');
      assert.ok(d.assets.some((a) => a.name === 'index.html'), 'index.html');
      assert.equal(d.chunks.filter((c) => c.is_entry).length, 1, 'one entry chunk');
      assert.deepEqual(d.chunks.filter((c) => c.dynamic_import).map((c) => c.chunk_name), ['details']);
      assert.equal(d.bundle_bytes, Object.values(disk).reduce((s, n) => s + n, 0));
      assert.equal(d.gzip_bytes, [...d.chunks, ...d.assets].reduce((s, x) => s + x.gzip_bytes, 0));

      await assertStored(server, [event]);

      // One info line, no warning.
      assert.deepEqual(r.logger.shiplog().map((l) => l.level), ['info']);
      await server.stop();
    });

    it('takes git commit and branch outside CI, and reports nothing without a URL', async () => {
      const server = await startServer();
      const r = await build({ plugin: { url: server.url, spoolDir: tempDir(), project: 'web-app', env: 'staging' } });
      assert.equal(r.error, null);
      const { event } = r.events[0];
      assert.equal(event.project, 'web-app');
      assert.equal(event.env, 'staging');
      assert.equal(event.data.ci, null);
      assert.match(event.id, /^local-/);
      const head = gitHead(FIXTURE);
      if (head) assert.equal(event.commit, head);
      await assertStored(server, [event]);

      const spoolDir = tempDir();
      const none = await build({ plugin: { spoolDir } });
      assert.equal(none.error, null);
      assert.equal(none.events.length, 0);
      const lines = none.logger.shiplog();
      assert.equal(lines.length, 1);
      assert.match(lines[0].msg, /SHIPLOG_URL/);
      assert.deepEqual(readdirSync(spoolDir), []);

      // disabled: nothing is sent, nothing is logged.
      const off = await build({ plugin: { url: server.url, spoolDir, disabled: true } });
      assert.equal(off.error, null);
      assert.equal(off.events.length, 0);
      assert.deepEqual(off.logger.shiplog(), []);
      await assertStored(server, [event]);
      await server.stop();
    });

    it('spools when the server is down, without slowing the build, and sends the spool next time', async () => {
      const spoolDir = join(tempDir(), 'spool');

      // Connection refused.
      const port = await closedPort();
      const a = await build({ plugin: { url: `http://127.0.0.1:${port}`, spoolDir } });
      assert.equal(a.error, null, 'the build succeeds');
      assert.ok(a.ms < 3000 + 5000, `build took ${a.ms} ms`);
      assert.equal(a.events[0].outcome.spooled, true);
      assert.equal(readdirSync(spoolDir).filter((f) => f.endsWith('.json')).length, 1);
      const warnings = a.logger.shiplog();
      assert.equal(warnings.length, 1, 'one line');
      assert.equal(warnings[0].level, 'warn');
      assert.match(warnings[0].msg, /spooled/);

      // A server that accepts the connection and never answers: bounded by timeoutMs.
      const hole = await blackhole();
      const b = await build({ plugin: { url: hole.url, spoolDir, timeoutMs: 800 } });
      assert.equal(b.error, null);
      assert.ok(hole.connections() >= 1, 'the plugin tried');
      const sendMs = b.ms - b.events[0].event.data.duration_ms;
      assert.ok(sendMs < 800 + 1500, `sending took about ${sendMs} ms with timeoutMs 800`);
      assert.equal(b.events[0].outcome.spooled, true);
      assert.equal(readdirSync(spoolDir).filter((f) => f.endsWith('.json')).length, 2);
      await hole.stop();

      // The server is back: the spooled events go first, then this build's.
      const server = await startServer();
      const c = await build({ plugin: { url: server.url, spoolDir } });
      assert.equal(c.error, null);
      const out = c.events[0].outcome;
      assert.equal(out.delivered, true);
      assert.equal(out.spoolSent, 2);
      assert.equal(out.spoolLeft, 0);
      assert.deepEqual(readdirSync(spoolDir).filter((f) => f.endsWith('.json')), [], 'the spool is empty');
      assert.ok(!existsSync(join(spoolDir, 'rejected')), 'nothing rejected');
      await assertStored(server, [a.events[0].event, b.events[0].event, c.events[0].event]);
      await server.stop();
    });

    it('reports a failed build with success false and leaves Vite\'s error untouched', async () => {
      const root = fixtureCopy(FIXTURE);
      breakFixture(root);
      const plain = await buildWithoutPlugin(root);
      assert.ok(plain, 'the broken fixture fails to build');

      const server = await startServer();
      const r = await build({ root, plugin: { url: server.url, spoolDir: tempDir() } });
      assert.ok(r.error, 'the build rejects');
      assert.equal(r.error.message, plain.message, "Vite's own error, unchanged");
      assert.equal(r.error.constructor, plain.constructor);
      assert.equal(r.events.length, 1, 'one event for the failed build');
      const { event, outcome } = r.events[0];
      assert.equal(outcome.delivered, true, JSON.stringify(outcome));
      assert.equal(event.data.success, false);
      assert.equal(typeof event.data.error, 'string');
      assert.match(event.data.error, /broken\.js/);
      assert.ok(Buffer.byteLength(event.data.error) <= 2048);
      assert.doesNotMatch(event.data.error, /\u001b\[/, 'no terminal colours');
      assert.equal(event.data.chunks, null, 'no bundle');
      assert.ok(event.data.phases.some((p) => p.name === 'transform'));
      await assertStored(server, [event]);
      await server.stop();
    });

    it('reports a render-phase failure (a plugin throwing in renderChunk)', async () => {
      const server = await startServer();
      const boom = { name: 'boom', renderChunk() { throw new Error('boom in renderChunk'); } };
      const events = [];
      let error = null;
      try {
        await vite.build({
          root: FIXTURE,
          configFile: false,
          logLevel: 'silent',
          plugins: [shiplog({ url: server.url, spoolDir: tempDir(), onEvent: (e) => events.push(e) }), boom],
          build: { outDir: tempDir('shiplog-out-'), emptyOutDir: true },
        });
      } catch (e) {
        error = e;
      }
      assert.ok(error && /boom in renderChunk/.test(error.message), 'the build rejects with the plugin error');
      assert.equal(events.length, 1);
      assert.equal(events[0].data.success, false);
      assert.match(events[0].data.error, /boom in renderChunk/);
      await assertStored(server, events);
      await server.stop();
    });
  });
}
