// One production build of a React + TypeScript app (apps.mjs) in this process, the way a
// project using that bundler sets it up, with or without the shiplog plugin:
//
//   node build-app.mjs <vite|webpack|rspack|rollup|esbuild> <appDir> <outDir> [pluginOptionsJSON]
//
// Without plugin options the plugin's package is never loaded. Prints one line as the
// process exits, `RESULT {"ms":…,"cpu":…,"rss":…}`: the build's time from the start of the
// process (module loading included), the CPU time the process used (user + system, every
// thread: the bundler's workers and the thread pool's gzip included; less sensitive to the
// machine's load than wall time), and the peak RSS (KiB).
//
// - vite: the app's own vite.config.ts (@vitejs/plugin-react), `vite build`.
// - webpack 5: esbuild-loader for .ts/.tsx, webpack's native CSS (experiments.css), asset
//   modules for images, esbuild to minify.
// - rspack: builtin:swc-loader, native CSS, asset modules, its default minifiers.
// - rollup 4: node-resolve, commonjs (react is CommonJS), replace (NODE_ENV),
//   rollup-plugin-esbuild (TypeScript, JSX, minify), and a small plugin below for CSS and
//   images (one stylesheet per chunk, images as emitted assets).
// - esbuild: bundle, splitting, minify, images with the file loader.
//
// Vite also writes index.html and copies public/: the others bundle src/main.tsx only.

import { readFile } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';

const [bundler, rootArg, outArg, pluginJson] = process.argv.slice(2);
const root = resolve(rootArg);
const outDir = resolve(outArg);
const pluginOptions = pluginJson ? JSON.parse(pluginJson) : null;
const NODE_ENV = JSON.stringify('production');
const IMAGES = /\.(png|svg|jpe?g|gif|webp)$/i;

async function shiplog(entry) {
  if (!pluginOptions) return [];
  const plugin = (await import(entry)).default;
  return [plugin(pluginOptions)];
}

/** Runs a webpack-like compiler to its end; throws the build's errors. */
function runCompiler(compiler) {
  return new Promise((done, fail) => {
    compiler.run((err, stats) => {
      const error = err || (stats?.hasErrors() ? new Error(stats.toString({ all: false, errors: true })) : null);
      compiler.close(() => (error ? fail(error) : done()));
    });
  });
}

const webpackBase = (plugins) => ({
  mode: 'production',
  context: root,
  entry: { main: './src/main.tsx' },
  output: { path: outDir, filename: '[name].[contenthash:8].js', chunkFilename: '[name].[contenthash:8].js', assetModuleFilename: '[name].[contenthash:8][ext]', clean: true },
  resolve: { extensions: ['.tsx', '.ts', '.js'] },
  devtool: false,
  infrastructureLogging: { level: 'error' },
  stats: 'none',
  plugins,
});

const builds = {
  async vite() {
    const { build } = await import('vite');
    await build({
      root,
      logLevel: 'warn',
      plugins: await shiplog('vite-plugin-shiplog'),
      build: { outDir, emptyOutDir: true },
    });
  },

  async webpack() {
    const { default: webpack } = await import('webpack');
    const { EsbuildPlugin } = await import('esbuild-loader');
    const config = webpackBase(await shiplog('unplugin-shiplog/webpack'));
    config.experiments = { css: true };
    config.module = {
      rules: [
        { test: /\.[jt]sx?$/, exclude: /node_modules/, loader: 'esbuild-loader', options: { loader: 'tsx', target: 'es2022', jsx: 'automatic' } },
        { test: IMAGES, type: 'asset/resource' },
      ],
    };
    config.optimization = { minimizer: [new EsbuildPlugin({ target: 'es2022', css: true })] };
    await runCompiler(webpack(config));
  },

  async rspack() {
    const { rspack } = await import('@rspack/core');
    const config = webpackBase(await shiplog('unplugin-shiplog/rspack'));
    config.module = {
      rules: [
        {
          test: /\.[jt]sx?$/,
          exclude: /node_modules/,
          loader: 'builtin:swc-loader',
          options: { jsc: { parser: { syntax: 'typescript', tsx: true }, transform: { react: { runtime: 'automatic' } } } },
          type: 'javascript/auto',
        },
        { test: /\.css$/, type: 'css/auto' },
        { test: IMAGES, type: 'asset/resource' },
      ],
    };
    await runCompiler(rspack(config));
  },

  async rollup() {
    const [{ rollup }, { nodeResolve }, { default: commonjs }, { default: replace }, { default: esbuild }] = await Promise.all([
      import('rollup'),
      import('@rollup/plugin-node-resolve'),
      import('@rollup/plugin-commonjs'),
      import('@rollup/plugin-replace'),
      import('rollup-plugin-esbuild'),
    ]);
    const bundle = await rollup({
      input: join(root, 'src', 'main.tsx'),
      plugins: [
        replace({ preventAssignment: true, values: { 'process.env.NODE_ENV': NODE_ENV } }),
        nodeResolve({ browser: true, extensions: ['.mjs', '.js', '.json', '.ts', '.tsx'] }),
        commonjs(),
        esbuild({ jsx: 'automatic', minify: true, target: 'es2022', tsconfig: false }),
        cssAndImages(),
        ...(await shiplog('unplugin-shiplog/rollup')),
      ],
      onwarn: () => {},
    });
    try {
      await bundle.write({ dir: outDir, format: 'es', entryFileNames: '[name]-[hash].js', chunkFileNames: '[name]-[hash].js', assetFileNames: '[name]-[hash][extname]' });
    } finally {
      await bundle.close();
    }
  },

  async esbuild() {
    const esbuild = await import('esbuild');
    await esbuild.build({
      absWorkingDir: root,
      entryPoints: ['src/main.tsx'],
      bundle: true,
      splitting: true,
      format: 'esm',
      minify: true,
      target: 'es2022',
      jsx: 'automatic',
      define: { 'process.env.NODE_ENV': NODE_ENV },
      loader: { '.png': 'file', '.svg': 'file' },
      outdir: outDir,
      entryNames: '[name]-[hash]',
      chunkNames: 'chunk-[hash]',
      assetNames: '[name]-[hash]',
      logLevel: 'error',
      plugins: await shiplog('unplugin-shiplog/esbuild'),
    });
  },
};

/** CSS imports collected per chunk into one stylesheet; images emitted as assets. */
function cssAndImages() {
  const css = new Map();
  return {
    name: 'bench-css-images',
    async load(id) {
      if (id.endsWith('.css')) {
        css.set(id, await readFile(id, 'utf8'));
        return { code: 'export {}', moduleSideEffects: 'no-treeshake' };
      }
      if (IMAGES.test(id)) {
        const ref = this.emitFile({ type: 'asset', name: basename(id), source: await readFile(id) });
        return `export default import.meta.ROLLUP_FILE_URL_${ref};`;
      }
      return null;
    },
    generateBundle(_, bundle) {
      for (const chunk of Object.values(bundle)) {
        if (chunk.type !== 'chunk') continue;
        const text = chunk.moduleIds.filter((id) => css.has(id)).map((id) => css.get(id)).join('\n');
        if (text) this.emitFile({ type: 'asset', name: `${chunk.name}.css`, source: text });
      }
    },
  };
}

if (!builds[bundler]) throw new Error(`unknown bundler ${bundler}: one of ${Object.keys(builds).join(', ')}`);
await builds[bundler]();
const ms = performance.now();
process.on('exit', () => {
  const u = process.resourceUsage();
  process.stdout.write(`RESULT ${JSON.stringify({ ms, cpu: (u.userCPUTime + u.systemCPUTime) / 1000, rss: u.maxRSS })}\n`);
});
