// Rollup 4: the Rollup-family hooks of shiplog-collector-core (shared with the Vite plugin).

import { dirname, resolve } from 'node:path';

import { createReporter, packageRoot, rollupFamilyHooks } from 'shiplog-collector-core';

export function rollupPlugin(options) {
  const reporter = createReporter(options, { source: 'rollup-plugin', userAgent: 'unplugin-shiplog' });
  let startedAt = 0;
  let watch = false;
  let meta = {};
  let root = process.cwd();
  const { reset, ...buildHooks } = rollupFamilyHooks(reporter, {
    root: () => root,
    takeStart: () => {
      const t = startedAt || null;
      startedAt = 0;
      return t;
    },
    watch: () => watch,
    data: (st) => ({
      tool: 'rollup',
      tool_version: st.meta.rollupVersion || meta.rollupVersion || null,
      bundler: 'rollup',
      bundler_version: st.meta.rollupVersion || meta.rollupVersion || null,
      mode: options?.mode || process.env.NODE_ENV || 'production',
    }),
  });
  return {
    // The first hook of a build: its start (config read and plugin setup come before).
    /** @this {any} Rollup's plugin context */
    options(inputOptions) {
      reporter.guard('options', () => {
        startedAt = Date.now();
        // The project: the package.json nearest to the first input.
        const input = inputOptions?.input;
        const first = typeof input === 'string' ? input : Array.isArray(input) ? input[0] : input ? Object.values(input)[0] : null;
        root = typeof first === 'string' ? packageRoot(dirname(resolve(first))) : process.cwd();
        reset();
        meta = this?.meta || {};
        watch = !!meta.watchMode;
      });
      return null;
    },
    // buildStart, buildEnd, renderError, generateBundle, writeBundle, closeBundle
    ...buildHooks,
  };
}
