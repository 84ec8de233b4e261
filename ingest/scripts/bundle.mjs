// Builds what the collector packages ship: each entry of each package bundled by esbuild
// into one ES module in the package's dist/, with shiplog-collector-core and the CI table
// (ci-providers.json) inlined. Loading a plugin is then one file instead of ten: it halves
// the cost a build pays before it starts (docs/benchmarks.md, "Cost of reporting a build").
//
//   node scripts/bundle.mjs [core|unplugin|vite-plugin …]   (default: every package)
//
// Run by `npm ci`/`npm install` (prepare), before the tests (`npm test`, and each
// package's pretest: the tests import the packages by name, so they run what is shipped),
// and by `npm pack`/`npm publish` (each package's prepack). Sources live in <package>/src/,
// type declarations beside package.json; dist/ is not committed.
//
// Bundler and peer packages (unplugin, vite, webpack, …) and Node built-ins stay imports:
// the plugins never load a bundler themselves, and unplugin-shiplog's main entry uses the
// unplugin the project installed.

import { build } from 'esbuild';
import { rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const INGEST = join(dirname(fileURLToPath(import.meta.url)), '..');

/** Per package: its entries (src/<name>.js → dist/<name>.js). */
const PACKAGES = {
  core: ['index'],
  unplugin: ['index', 'webpack', 'rspack', 'rollup', 'esbuild'],
  'vite-plugin': ['index'],
};

/** The core is bundled from its sources, not from its own dist/ (no build order). */
const coreFromSource = {
  name: 'shiplog-collector-core-from-source',
  setup(b) {
    b.onResolve({ filter: /^shiplog-collector-core$/ }, () => ({ path: join(INGEST, 'core', 'src', 'index.js') }));
  },
};

const wanted = process.argv.slice(2);
for (const name of wanted) if (!PACKAGES[name]) throw new Error(`unknown package ${name}: one of ${Object.keys(PACKAGES).join(', ')}`);

for (const [pkg, entries] of Object.entries(PACKAGES)) {
  if (wanted.length && !wanted.includes(pkg)) continue;
  const dir = join(INGEST, pkg);
  rmSync(join(dir, 'dist'), { recursive: true, force: true });
  await build({
    entryPoints: Object.fromEntries(entries.map((e) => [e, join(dir, 'src', `${e}.js`)])),
    outdir: join(dir, 'dist'),
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    // Each entry one file: shared code is repeated, never split into a chunk to load too.
    splitting: false,
    // Only our own code is inlined: every package is left to the project's node_modules.
    packages: 'external',
    plugins: [coreFromSource],
    legalComments: 'none',
    logLevel: 'warning',
    banner: { js: `// ${pkg}: built by ingest/scripts/bundle.mjs from src/ (esbuild); do not edit.` },
  });
}
