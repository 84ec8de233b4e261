// How each bundler builds the fixture with the plugin (or without it, for the benchmark
// and for comparing errors): real webpack, Rspack, Rollup and esbuild from the registry.

import { join } from 'node:path';

import { unplugin } from 'unplugin-shiplog';
import shiplogEsbuild from 'unplugin-shiplog/esbuild';
import shiplogRollup from 'unplugin-shiplog/rollup';
import shiplogRspack from 'unplugin-shiplog/rspack';
import shiplogWebpack from 'unplugin-shiplog/webpack';

const quiet = { level: 'none' };

/** Runs a webpack-like compiler to its end; resolves with the build error (or null). */
function runCompiler(compiler) {
  return new Promise((done) => {
    compiler.run((err, stats) => {
      const error = err || (stats?.hasErrors() ? new Error(stats.toString({ all: false, errors: true })) : null);
      compiler.close(() => done(error));
    });
  });
}

/**
 * The plugin for options `plugin` (null: none): from the bundler's entry, or with
 * `fromIndex` from the main entry (unplugin's factory).
 */
const pluginsFor = ({ plugin, fromIndex }, entry, framework) => (plugin ? [(fromIndex ? unplugin[framework] : entry)(plugin)] : []);

/** webpack and Rspack take the same configuration. */
function webpackConfig(o, shiplogPlugin, framework) {
  const { root, outDir } = o;
  return {
    mode: 'production',
    context: root,
    entry: { main: './src/main.js' },
    output: { path: outDir, filename: '[name].[contenthash:8].js', chunkFilename: '[name].[contenthash:8].js', clean: true },
    devtool: false,
    infrastructureLogging: quiet,
    stats: 'none',
    plugins: pluginsFor(o, shiplogPlugin, framework),
  };
}

export const BUNDLERS = {
  webpack: {
    source: 'webpack-plugin',
    async build(o) {
      const { default: webpack } = await import('webpack');
      return runCompiler(webpack(webpackConfig(o, shiplogWebpack, 'webpack')));
    },
  },
  rspack: {
    source: 'rspack-plugin',
    async build(o) {
      const { rspack } = await import('@rspack/core');
      return runCompiler(rspack(webpackConfig(o, shiplogRspack, 'rspack')));
    },
  },
  rollup: {
    source: 'rollup-plugin',
    async build(o) {
      const { root, outDir } = o;
      const { rollup } = await import('rollup');
      let bundle = null;
      try {
        bundle = await rollup({
          input: join(root, 'src', 'main.js'),
          plugins: pluginsFor(o, shiplogRollup, 'rollup'),
          onwarn: () => {},
        });
        await bundle.write({ dir: outDir, format: 'es', entryFileNames: '[name]-[hash].js', chunkFileNames: '[name]-[hash].js' });
        return null;
      } catch (e) {
        return e;
      } finally {
        await bundle?.close();
      }
    },
  },
  esbuild: {
    source: 'esbuild-plugin',
    async build(o) {
      const { root, outDir } = o;
      const esbuild = await import('esbuild');
      try {
        await esbuild.build({
          absWorkingDir: root,
          entryPoints: ['src/main.js'],
          bundle: true,
          splitting: true,
          format: 'esm',
          minify: true,
          outdir: outDir,
          entryNames: '[name]-[hash]',
          chunkNames: 'chunk-[hash]',
          logLevel: 'silent',
          plugins: pluginsFor(o, shiplogEsbuild, 'esbuild'),
        });
        return null;
      } catch (e) {
        return e;
      }
    },
  },
};
