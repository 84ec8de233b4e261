// esbuild: one session per build (per rebuild of a context). The outputs come from the
// metafile (turned on by the plugin) and the files esbuild wrote, or its outputFiles when
// `write: false`. esbuild reports no phases.

import { dirname, relative, resolve } from 'node:path';

import { createReporter, packageVersion } from 'shiplog-collector-core';

/**
 * @param {import('esbuild').PluginBuild} build
 * @param {import('../index.d.ts').ShiplogOptions} options
 */
export function esbuildSetup(build, options) {
  const reporter = createReporter(options, { source: 'esbuild-plugin', userAgent: 'unplugin-shiplog' });
  const { guard } = reporter;
  const o = build.initialOptions;
  o.metafile = true;
  const cwd = o.absWorkingDir || process.cwd();
  const outBase = o.outdir ? resolve(cwd, o.outdir) : o.outfile ? dirname(resolve(cwd, o.outfile)) : cwd;
  const userEntries = new Set();
  const entries = Array.isArray(o.entryPoints) ? o.entryPoints : o.entryPoints ? Object.values(o.entryPoints) : [];
  for (const e of entries) {
    const p = typeof e === 'string' ? e : e?.in;
    if (p) userEntries.add(relative(cwd, resolve(cwd, p)).split('\\').join('/'));
  }
  let session = null;

  build.onStart(() => {
    guard('onStart', () => {
      session = reporter.start({ root: cwd });
    });
  });

  build.onEnd(async (result) => {
    await guard('onEnd', async () => {
      const s = session;
      session = null;
      if (!s) return;
      const end = Date.now();
      const meta = result.metafile;
      if (meta && !result.errors?.length) {
        const contents = new Map((result.outputFiles || []).map((f) => [resolve(f.path), f.contents]));
        for (const [out, info] of Object.entries(meta.outputs)) {
          const abs = resolve(cwd, out);
          const entry = info.entryPoint ? info.entryPoint.split('\\').join('/') : null;
          s.addOutput({
            name: relative(outBase, abs).split('\\').join('/'),
            ...(contents.has(abs) ? { content: contents.get(abs) } : { path: abs }),
            chunk_name: entry,
            is_entry: !!entry && userEntries.has(entry),
            dynamic_import: !!entry && !userEntries.has(entry),
          });
        }
      }
      const version = build.esbuild?.version || packageVersion(cwd, 'esbuild');
      const inputs = meta ? Object.keys(meta.inputs).length : null;
      await s.report({
        success: !result.errors?.length,
        error: result.errors?.length ? result.errors.map((e) => (e.location ? `${e.location.file}:${e.location.line}:${e.location.column}: ${e.text}` : e.text)).join('\n') : null,
        endAt: end,
        data: {
          tool: 'esbuild',
          tool_version: version,
          bundler: 'esbuild',
          bundler_version: version,
          mode: options?.mode || (o.minify ? 'production' : process.env.NODE_ENV || 'production'),
          modules_transformed: inputs,
          modules_total: inputs,
        },
      });
    });
  });
}

