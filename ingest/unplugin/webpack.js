// `import shiplog from 'unplugin-shiplog/webpack'`: the webpack plugin.
import { unplugin } from './index.js';

export default unplugin.webpack;
