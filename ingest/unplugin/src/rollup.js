// `import shiplog from 'unplugin-shiplog/rollup'`: the Rollup plugin. The same plugin as
// `unplugin.rollup` of index.js, made without loading unplugin (about 40 ms at the start
// of every build: see docs/benchmarks.md).
import { rollupPlugin } from './rollup-hooks.js';

/** @param {import('../index.d.ts').ShiplogOptions} [options] */
export default function shiplog(options = {}) {
  return { name: 'unplugin-shiplog', ...rollupPlugin(options) };
}
