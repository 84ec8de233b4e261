// `import shiplog from 'unplugin-shiplog/rollup'`: the rollup plugin.
import { unplugin } from './index.js';

export default unplugin.rollup;
