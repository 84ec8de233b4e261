// vite-plugin-shiplog: reports every `vite build` to a shiplog server as one `build` event.
//
// Works with Vite 7 (Rollup) and Vite 8 (Rolldown). Built on shiplog-collector-core (the
// core every shiplog bundler plugin shares; no other runtime dependency). The plugin never
// throws and never fails or changes the build: every error of its own is caught and
// printed as one warning line.

import { createReporter, packageVersion, rollupFamilyHooks } from 'shiplog-collector-core';

export { deliver, detectCi, detectGit, errorText, measureBundle, spoolDirFor } from './compat.js';

/**
 * Creates the plugin.
 * @param {import('../index.d.ts').ShiplogOptions} [options]
 * @returns {import('vite').Plugin}
 */
export default function shiplog(options = {}) {
  const reporter = createReporter(options, { source: 'vite-plugin', userAgent: 'vite-plugin-shiplog' });
  /** Time of the `config` hook: the start of the build as this plugin sees it. */
  let configStartedAt = 0;
  /** @type {any} */
  let config = null;
  let watch = false;

  const { reset, ...buildHooks } = rollupFamilyHooks(reporter, {
    root: () => config?.root || process.cwd(),
    // The first build starts at the config hook; a watch-mode rebuild starts at buildStart.
    takeStart: () => {
      const t = configStartedAt || null;
      configStartedAt = 0;
      return t;
    },
    watch: () => watch,
    data: (st) => {
      const m = st.meta;
      return {
        tool: 'vite',
        tool_version: m.viteVersion || packageVersion(config?.root || process.cwd(), 'vite'),
        bundler: m.rolldownVersion ? 'rolldown' : m.rollupVersion ? 'rollup' : null,
        bundler_version: m.rolldownVersion || m.rollupVersion || null,
        mode: config?.mode || 'production',
      };
    },
  });

  return {
    name: 'vite-plugin-shiplog',
    apply: 'build',

    config() {
      reporter.guard('config', () => {
        // One `config` call per build() / `vite build`: a fresh start.
        configStartedAt = Date.now();
        reset();
      });
    },

    configResolved(resolved) {
      reporter.guard('configResolved', () => {
        config = resolved;
        watch = !!resolved?.build?.watch;
        reporter.setLogger(resolved?.logger);
      });
    },

    // buildStart, buildEnd, renderError, generateBundle, writeBundle, closeBundle
    ...buildHooks,
  };
}

export { shiplog };
