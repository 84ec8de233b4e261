// How a project uses the packages' types: each plugin in its bundler's own configuration
// type, the options and the event typed. `npm test` runs `tsc` on this (nothing is run): a
// declaration that does not fit the bundler's plugin type, or that accepts anything, fails.

import type { BuildOptions } from 'esbuild';
import type { RollupOptions } from 'rollup';
import type { RspackOptions } from '@rspack/core';
import type { Configuration as WebpackConfiguration } from 'webpack';
import { defineConfig } from 'vite';

import { createReporter, detectCiRun, type BuildEvent, type DeliveryOutcome, type ShiplogOptions } from 'shiplog-collector-core';
import shiplogEsbuild from 'unplugin-shiplog/esbuild';
import shiplogRollup from 'unplugin-shiplog/rollup';
import shiplogRspack from 'unplugin-shiplog/rspack';
import shiplogWebpack from 'unplugin-shiplog/webpack';
import unplugin, { webpack as webpackFromIndex } from 'unplugin-shiplog';
import shiplogVite, { measureBundle } from 'vite-plugin-shiplog';

const options: ShiplogOptions = {
  url: 'https://shiplog.example.com',
  token: 'secret',
  project: 'web',
  timeoutMs: 1500,
  onEvent(event: BuildEvent, outcome: DeliveryOutcome) {
    const ms: number = event.data.duration_ms;
    const chunks: number = event.data.chunks?.length ?? 0;
    const sent: boolean = outcome.delivered;
    void [ms, chunks, sent];
  },
};

export const webpackConfig: WebpackConfiguration = { plugins: [shiplogWebpack(options), webpackFromIndex()] };
export const rspackConfig: RspackOptions = { plugins: [shiplogRspack(options)] };
export const rollupConfig: RollupOptions = { input: 'src/main.js', plugins: [shiplogRollup(options)] };
export const esbuildOptions: BuildOptions = { entryPoints: ['src/main.js'], plugins: [shiplogEsbuild(options)] };
export const viteConfig = defineConfig({ plugins: [shiplogVite(options), unplugin.vite(options)] });

export async function sizes(): Promise<number> {
  const m = await measureBundle({});
  return m ? m.gzipBytes : 0;
}

const session = createReporter(options, { source: 'custom-plugin', userAgent: 'custom' }).start({ root: '.' });
session.addOutput({ name: 'main.js', content: 'console.log(1)', is_entry: true });
export const reported: Promise<BuildEvent | null> = session.report({ data: { tool: 'custom' } });
export const ci = detectCiRun(process.env);

// @ts-expect-error: the URL is a string
shiplogWebpack({ url: 7070 });
// @ts-expect-error: no such option
shiplogVite({ unknownOption: true });
// @ts-expect-error: timeoutMs is a number of milliseconds
shiplogRollup({ timeoutMs: '3s' });
