import type { Plugin } from 'vite';

/** Options of `shiplog()`. Every option is optional. */
export interface ShiplogOptions {
  /** Server base URL, e.g. `https://shiplog.example.com`. Default: `SHIPLOG_URL`. Without one the plugin does nothing. */
  url?: string;
  /** Bearer token with the `ingest` scope. Default: `SHIPLOG_TOKEN`. */
  token?: string;
  /** Project name. Default: `SHIPLOG_PROJECT`, else the nearest package.json `name`, else the root folder's name. */
  project?: string;
  /** Environment. Default: `SHIPLOG_ENV`, else `VERCEL_ENV`, else the Vite mode (`production` for `vite build`). */
  env?: string;
  /** Time budget for all sending of one build (spooled events and this one), in ms. Default 3000. */
  timeoutMs?: number;
  /** Spool folder (relative to the Vite root). Default `node_modules/.cache/shiplog`, or `.shiplog-spool` when the root has no node_modules. */
  spoolDir?: string;
  /** Oldest spooled events beyond this count are dropped. Default 1000. */
  maxSpoolFiles?: number;
  /** Turn the plugin off (also `SHIPLOG_DISABLED=1`). */
  disabled?: boolean;
  /** Called with each event after the delivery attempt (for logging or tests). Errors in it are ignored. */
  onEvent?: (event: BuildEvent, outcome: DeliveryOutcome) => void | Promise<void>;
}

export interface BuildPhase {
  /** `config`, `transform`, `render` or `write`. */
  name: string;
  duration_ms: number;
}

export interface BuildChunk {
  /** Output file name, relative to outDir (e.g. `assets/index-DiwrgTda.js`). */
  name: string;
  /** The bundler's chunk name (e.g. `index`). */
  chunk_name: string | null;
  bytes: number;
  gzip_bytes: number | null;
  is_entry: boolean;
  dynamic_import: boolean;
}

export interface BuildAsset {
  /** Output file name, relative to outDir (e.g. `assets/index-BvGq1a9Z.css`). */
  name: string;
  bytes: number;
  gzip_bytes: number | null;
}

export interface BuildCi {
  provider: string;
  run_id: string | null;
  url: string | null;
}

export interface BuildData {
  tool: 'vite';
  tool_version: string | null;
  /** `rolldown` (Vite 8) or `rollup` (Vite 7). */
  bundler: 'rolldown' | 'rollup' | null;
  bundler_version: string | null;
  mode: string;
  success: boolean;
  duration_ms: number;
  phases: BuildPhase[];
  modules_transformed: number | null;
  modules_total: number | null;
  bundle_bytes: number | null;
  gzip_bytes: number | null;
  chunks: BuildChunk[] | null;
  assets: BuildAsset[] | null;
  ci: BuildCi | null;
  node_version: string;
  /** Total size of the `.map` files (not counted in bundle_bytes). */
  sourcemap_bytes?: number;
  /** The Vite environment when it is not `client` (e.g. `ssr`). */
  environment?: string;
  /** Set in `vite build --watch`: one event per rebuild. */
  watch?: boolean;
  /** On failure: the build error's message, at most 2 KB. */
  error?: string;
}

/** The `build` event as sent to `POST /v1/events`. */
export interface BuildEvent {
  id: string;
  kind: 'build';
  source: 'vite-plugin';
  time: string;
  project: string;
  env: string;
  commit?: string;
  branch?: string;
  data: BuildData;
}

export interface DeliveryOutcome {
  /** This build's event got a 2xx. */
  delivered: boolean;
  /** This build's event was written to the spool (server unreachable, 5xx, 429, timeout). */
  spooled: boolean;
  /** This build's event got a 4xx and was put in `rejected/`. */
  rejected: boolean;
  /** Spooled events delivered before this one. */
  spoolSent: number;
  /** Spooled events the server refused (moved to `rejected/`). */
  spoolRejected: number;
  /** Events still waiting in the spool. */
  spoolLeft: number;
  /** HTTP status of this build's event, when there was an answer. */
  status: number | null;
  summary: string;
  warning: string | null;
}

/** The Vite plugin. */
export default function shiplog(options?: ShiplogOptions): Plugin;
export { shiplog };

/** Sends the spooled events then `event`; never throws. */
export function deliver(
  event: BuildEvent,
  options: { url: string; token?: string; timeoutMs: number; spoolDir: string; maxSpoolFiles?: number },
): Promise<DeliveryOutcome>;

/** The CI run described by the environment variables, or null outside CI. */
export function detectCi(env: Record<string, string | undefined>): BuildCi | null;

/** Commit and branch from CI variables, else from git (null when unknown). */
export function detectGit(
  env: Record<string, string | undefined>,
  cwd: string,
): { commit: string | null; branch: string | null };

/** Chunk and asset sizes of an output bundle. */
export function measureBundle(bundle: Record<string, unknown> | null): Promise<{
  chunks: BuildChunk[];
  assets: BuildAsset[];
  bundleBytes: number;
  gzipBytes: number;
  sourcemapBytes: number;
} | null>;

/** The error message without ANSI colours, at most 2 KB of UTF-8. */
export function errorText(err: unknown): string;

/** The spool folder for the options and the Vite root. */
export function spoolDirFor(options: ShiplogOptions, root: string): string;
