// `import shiplog from 'unplugin-shiplog/webpack'`: the webpack plugin. The same plugin as
// `unplugin.webpack` of index.js, made without loading unplugin (about 40 ms at the start
// of every build: see docs/benchmarks.md).
import { webpackLikeApply } from './webpack-hooks.js';

/** @param {import('../index.d.ts').ShiplogOptions} [options] */
export default function shiplog(options = {}) {
  return {
    name: 'unplugin-shiplog',
    apply(compiler) {
      webpackLikeApply(compiler, options, 'webpack');
    },
  };
}
