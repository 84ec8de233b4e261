// `import shiplog from 'unplugin-shiplog/rspack'`: the Rspack plugin. The same plugin as
// `unplugin.rspack` of index.js, made without loading unplugin (about 40 ms at the start
// of every build: see docs/benchmarks.md).
import { webpackLikeApply } from './webpack-hooks.js';

/** @param {import('../index.d.ts').ShiplogOptions} [options] */
export default function shiplog(options = {}) {
  return {
    name: 'unplugin-shiplog',
    apply(compiler) {
      webpackLikeApply(compiler, options, 'rspack');
    },
  };
}
