import { rollup } from './index.js';

export default rollup;
