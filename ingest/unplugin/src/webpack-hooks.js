// webpack 5 and Rspack: one session per compilation run (per rebuild in watch mode).
//
// Phases: `compile` (run start to make: setup, records, cache), `make` (modules built),
// `seal` (optimize, chunk and code generation), `emit` (files written). webpack hands each
// file to the sizer from the assetEmitted hook as it is written, with the bytes it wrote, so
// gzip runs while the rest is written (webpack frees the sources after emitting); Rspack's
// files are read from disk after its emit (see afterEmit below).

import { join, relative } from 'node:path';

import { createReporter, packageVersion } from 'shiplog-collector-core';

const PLUGIN = 'unplugin-shiplog';

/**
 * @param {any} compiler webpack or Rspack compiler
 * @param {import('../index.d.ts').ShiplogOptions} options
 * @param {'webpack' | 'rspack'} framework
 */
export function webpackLikeApply(compiler, options, framework) {
  const reporter = createReporter(options, { source: `${framework}-plugin`, userAgent: PLUGIN });
  const { guard } = reporter;
  const root = compiler.options?.context || process.cwd();
  try {
    const logger = compiler.getInfrastructureLogger?.('shiplog');
    if (logger) reporter.setLogger({ info: (m) => logger.info(m.replace(/^\[shiplog\] /, '')), warn: (m) => logger.warn(m.replace(/^\[shiplog\] /, '')) });
  } catch {
    /* console then */
  }
  const version = compiler.webpack?.version || packageVersion(root, framework === 'rspack' ? '@rspack/core' : 'webpack');
  let run = null;

  const begin = () =>
    guard('run', () => {
      run = { session: reporter.start({ root }), t: {}, chunkOf: new Map(), outputPath: null };
    });
  compiler.hooks.beforeRun.tap(PLUGIN, begin);
  compiler.hooks.watchRun.tap(PLUGIN, begin);

  compiler.hooks.make.tap(PLUGIN, () => {
    if (run) run.t.make = Date.now();
  });
  compiler.hooks.thisCompilation.tap(PLUGIN, (compilation) => {
    guard('compilation', () => {
      compilation.hooks.seal?.tap(PLUGIN, () => {
        if (run) run.t.seal = Date.now();
      });
    });
  });
  compiler.hooks.emit.tap(PLUGIN, (compilation) => {
    guard('emit', () => {
      if (!run) return;
      run.t.emit = Date.now();
      // Which chunk wrote which file: chunk name, entry, loaded on demand.
      const entryChunks = new Set();
      for (const ep of compilation.entrypoints?.values?.() ?? []) {
        const c = ep.getEntrypointChunk?.();
        if (c) entryChunks.add(c);
      }
      for (const chunk of compilation.chunks) {
        const info = {
          chunk_name: chunk.name ?? null,
          is_entry: entryChunks.has(chunk),
          dynamic_import: typeof chunk.canBeInitial === 'function' ? !chunk.canBeInitial() : false,
        };
        for (const f of chunk.files) run.chunkOf.set(f, info);
      }
    });
  });
  const typeOf = (file, c) => (c && /\.(m?js|cjs)$/i.test(file) ? 'chunk' : 'asset');
  if (framework === 'webpack') {
    // webpack: each file's bytes as it is written (a JavaScript hook, the Buffer at hand).
    compiler.hooks.assetEmitted.tap(PLUGIN, (file, info) => {
      guard('assetEmitted', () => {
        if (!run) return;
        const c = run.chunkOf.get(file);
        run.session.addOutput({ name: file, type: typeOf(file, c), content: info?.content, ...(c || {}) });
      });
    });
  }
  compiler.hooks.afterEmit.tap(PLUGIN, (compilation) => {
    if (!run) return;
    run.t.afterEmit = Date.now();
    if (framework !== 'rspack') return;
    // Rspack: the written files, read from disk once they are all there. A tap on its
    // assetEmitted makes Rspack stop at every file for a call into JavaScript and copy the
    // file's bytes out of Rust: measured, hundreds of milliseconds on a 50-file build.
    guard('afterEmit', () => {
      const outputPath = compilation.outputOptions?.path || compiler.outputPath || root;
      for (const asset of compilation.getAssets()) {
        const c = run.chunkOf.get(asset.name);
        run.session.addOutput({ name: asset.name, type: typeOf(asset.name, c), path: join(outputPath, asset.name), ...(c || {}) });
      }
    });
  });

  const finish = async (stats, fatal) => {
    if (!run) return;
    const r = run;
    run = null;
    const s = r.session;
    const end = Date.now();
    const t = r.t;
    s.phase('compile', s.startedAt, t.make);
    s.phase('make', t.make, t.seal || (fatal ? end : 0));
    s.phase('seal', t.seal, t.emit || (fatal ? end : 0));
    s.phase('emit', t.emit, t.afterEmit || (t.emit ? end : 0));
    const compilation = stats?.compilation;
    let modulesTotal = null;
    let modulesTransformed = null;
    try {
      const mods = compilation ? [...compilation.modules] : null;
      if (mods) {
        modulesTotal = mods.length;
        modulesTransformed = mods.filter((m) => !m.externalType && m.constructor?.name !== 'ExternalModule').length;
      }
    } catch {
      /* not exposed */
    }
    let error = fatal || null;
    if (!error && stats?.hasErrors?.()) {
      const errs = compilation?.errors ? [...compilation.errors] : [];
      error = errs.length ? errs.map((e) => located(e, root)).join('\n\n') : 'build failed';
    }
    const mode = compiler.options?.mode || options?.mode || 'production';
    await s.report({
      success: !error,
      error,
      endAt: end,
      data: {
        tool: framework,
        tool_version: version,
        bundler: framework,
        bundler_version: version,
        mode,
        modules_transformed: modulesTransformed,
        modules_total: modulesTotal,
        ...(compiler.watchMode ? { watch: true } : {}),
      },
    });
  };
  compiler.hooks.done.tapPromise(PLUGIN, (stats) => guard('done', () => finish(stats, null)) || Promise.resolve());
  compiler.hooks.failed.tap(PLUGIN, (err) => {
    // A fatal error: webpack calls no done hook. Report without holding the failure up.
    guard('failed', () => finish(null, err));
  });
}

/** A compilation error with the module it is about (webpack's message does not name it). */
function located(e, root) {
  const message = e?.message ?? String(e);
  let where = e?.file || e?.module?.resource || e?.moduleIdentifier || null;
  if (typeof where === 'string') {
    where = where.split('!').pop();
    if (where.startsWith('/')) where = `./${relative(root, where).split('\\').join('/')}`;
    if (!message.includes(where)) return `${where}: ${message}`;
  }
  return message;
}
