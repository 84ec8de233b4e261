import { rspack } from './index.js';

export default rspack;
