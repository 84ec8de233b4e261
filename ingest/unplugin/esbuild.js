// `import shiplog from 'unplugin-shiplog/esbuild'`: the esbuild plugin.
import { unplugin } from './index.js';

export default unplugin.esbuild;
