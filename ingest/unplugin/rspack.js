// `import shiplog from 'unplugin-shiplog/rspack'`: the rspack plugin.
import { unplugin } from './index.js';

export default unplugin.rspack;
