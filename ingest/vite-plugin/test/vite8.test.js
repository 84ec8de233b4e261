// Vite 8 bundles with Rolldown.
import { viteSuite } from './suite.js';

viteSuite('vite 8 (rolldown)', 'vite', { major: 8, bundler: 'rolldown' });
