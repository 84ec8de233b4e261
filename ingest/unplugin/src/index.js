// unplugin-shiplog: reports every webpack 5, Rspack, Rollup 4 and esbuild build to a
// shiplog server as one `build` event, with the core the Vite plugin uses
// (shiplog-collector-core): the same payload, chunks with gzip sizes, git and CI, spool.
//
// Built on unplugin's factory; every hook is the bundler's own (unplugin's shared hooks
// carry no output sizes), so no loader or transform is added to the build. The plugin never
// throws and never fails or changes the build.

import { createUnplugin } from 'unplugin';

import { esbuildSetup } from './esbuild-hooks.js';
import { rollupPlugin } from './rollup-hooks.js';
import { webpackLikeApply } from './webpack-hooks.js';

/** @type {import('unplugin').UnpluginInstance<import('../index.d.ts').ShiplogOptions | undefined>} */
export const unplugin = createUnplugin((options = {}) => ({
  name: 'unplugin-shiplog',
  rollup: rollupPlugin(options),
  webpack(compiler) {
    webpackLikeApply(compiler, options, 'webpack');
  },
  rspack(compiler) {
    webpackLikeApply(compiler, options, 'rspack');
  },
  esbuild: {
    setup(build) {
      esbuildSetup(build, options);
    },
  },
}));

export const webpack = unplugin.webpack;
export const rspack = unplugin.rspack;
export const rollup = unplugin.rollup;
export const esbuild = unplugin.esbuild;
export default unplugin;
