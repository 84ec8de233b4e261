// Vite 7 bundles with Rollup. Installed under the alias `vite7` (npm:vite@^7).
import { viteSuite } from './suite.js';

viteSuite('vite 7 (rollup)', 'vite7', { major: 7, bundler: 'rollup' });
