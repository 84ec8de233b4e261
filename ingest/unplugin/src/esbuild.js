// `import shiplog from 'unplugin-shiplog/esbuild'`: the esbuild plugin. The same plugin as
// `unplugin.esbuild` of index.js, made without loading unplugin (about 40 ms at the start
// of every build: see docs/benchmarks.md).
import { esbuildSetup } from './esbuild-hooks.js';

/** @param {import('../index.d.ts').ShiplogOptions} [options] */
export default function shiplog(options = {}) {
  return {
    name: 'unplugin-shiplog',
    setup(build) {
      esbuildSetup(build, options);
    },
  };
}
