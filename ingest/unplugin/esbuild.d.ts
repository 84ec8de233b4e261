import { esbuild } from './index.js';

export default esbuild;
