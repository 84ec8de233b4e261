import { webpack } from './index.js';

export default webpack;
