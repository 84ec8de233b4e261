/** Options of every shiplog bundler plugin. Every option is optional. */
export interface ShiplogOptions {
  /** Server base URL, e.g. `https://shiplog.example.com`. Default: `SHIPLOG_URL`. Without one the plugin does nothing. */
  url?: string;
  /** Bearer token with the `ingest` scope. Default: `SHIPLOG_TOKEN`. */
  token?: string;
  /** Project name. Default: `SHIPLOG_PROJECT`, else the nearest package.json `name`, else the root folder's name. */
  project?: string;
  /** Environment. Default: `SHIPLOG_ENV`, else the CI's (VERCEL_ENV, Netlify CONTEXT, GitLab environment), else the mode (`production` for a production build). */
  env?: string;
  /** The build mode (`data.mode`) when the bundler does not say it. Default `production`. */
  mode?: string;
  /** How long a build waits for the server's answer to its one request (this event and the spooled ones), in ms; what is not acknowledged by then is spooled. Default 2000. */
  timeoutMs?: number;
  /** Spool folder (relative to the project root). Default `node_modules/.cache/shiplog`, or `.shiplog-spool` when the root has no node_modules. */
  spoolDir?: string;
  /** Oldest spooled events beyond this count are dropped. Default 1000. */
  maxSpoolFiles?: number;
  /** Turn the plugin off (also `SHIPLOG_DISABLED=1`). */
  disabled?: boolean;
  /** Called with each event after the delivery attempt (for logging or tests). Errors in it are ignored. */
  onEvent?: (event: BuildEvent, outcome: DeliveryOutcome) => void | Promise<void>;
}

export interface BuildPhase {
  /** Vite and Rollup: `config`, `transform`, `render`, `write`; webpack and Rspack: `compile`, `make`, `seal`, `emit`. */
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
  /** The provider id of ci-providers.json: github, gitlab, circleci, buildkite, bitbucket, azure, netlify, vercel, cloudflare, jenkins. */
  provider: string;
  run_id: string | null;
  url: string | null;
  /** More fields the provider gives (attempt, job, repository, …). */
  [field: string]: string | number | null;
}

export interface BuildData {
  /** `vite`, `webpack`, `rspack`, `rollup` or `esbuild`. */
  tool: string;
  tool_version: string | null;
  /** Vite: `rolldown` (Vite 8) or `rollup` (Vite 7); the others: the tool itself. */
  bundler: string | null;
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
  /** `vite-plugin`, `webpack-plugin`, `rspack-plugin`, `rollup-plugin` or `esbuild-plugin`. */
  source: string;
  time: string;
  project: string;
  env: string;
  commit?: string;
  branch?: string;
  /** The deployment, when the CI is one (Vercel, Netlify). */
  deployment_id?: string;
  data: BuildData;
}

export interface DeliveryOutcome {
  /** This build's event got a 2xx. */
  delivered: boolean;
  /** This build's event was written to the spool (server unreachable, 5xx, 429, timeout). */
  spooled: boolean;
  /** This build's event got a 4xx and was put in `rejected/`. */
  rejected: boolean;
  /** Spooled events delivered with this one. */
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

/** Sends the spooled events (oldest first) and `event` in one request, within `timeoutMs`; spools what is not acknowledged; never throws. */
export function deliver(
  event: BuildEvent,
  options: { url: string; token?: string; timeoutMs: number; spoolDir: string; maxSpoolFiles?: number; userAgent?: string },
): Promise<DeliveryOutcome>;

/** Loads the HTTP client and opens a connection to the server at `url` for the next deliver() there (a build calls it when it starts). Never throws; the connection does not keep the process alive. */
export function preconnect(url: string): void;

/** The CI run described by the environment variables, or null outside CI. */
export function detectCi(env: Record<string, string | undefined>): BuildCi | null;

/** The CI run with every field of the table (run_key, commit, branch, base_branch, env, deployment_id, …), or null outside CI. */
export function detectCiRun(env: Record<string, string | undefined>): Record<string, any> | null;

/** The providers of ci-providers.json, in detection order. */
export function ciProviders(): Array<{ id: string; name: string; detect: { var: string; when: 'truthy' | 'present' } }>;

/** Commit and branch: SHIPLOG_COMMIT/SHIPLOG_BRANCH, the CI's, else the repository's files (null when unknown). */
export function detectGit(
  env: Record<string, string | undefined>,
  cwd: string,
  ci?: Record<string, any> | null,
): Promise<{ commit: string | null; branch: string | null }>;

/** The error message without ANSI colours, at most 2 KB of UTF-8. */
export function errorText(err: unknown): string;

/** The spool folder for the options and the project root. */
export function spoolDirFor(options: ShiplogOptions, root: string): string;

/** One output file handed to the sizer: `content` (text or bytes) or `path` to read. */
export interface OutputFile {
  name: string;
  type?: 'chunk' | 'asset';
  content?: string | Uint8Array;
  path?: string;
  chunk_name?: string | null;
  is_entry?: boolean;
  dynamic_import?: boolean;
}

export interface Sizes {
  chunks: BuildChunk[];
  assets: BuildAsset[];
  bundleBytes: number;
  gzipBytes: number;
  sourcemapBytes: number;
}

/** Measures output files (gzip on the thread pool, started as each file is added). */
export function createSizer(): { add(file: OutputFile): void; readonly size: number; result(): Promise<Sizes | null> };

/** One build of a plugin: phases, outputs, then the event. */
export interface BuildSession {
  readonly root: string;
  readonly startedAt: number;
  error: unknown;
  readonly reported: boolean;
  phase(name: string, from: number, to: number): void;
  addOutput(file: OutputFile): void;
  report(o?: { data?: Partial<BuildData>; success?: boolean; error?: unknown; environment?: string | null; endAt?: number }): Promise<BuildEvent | null>;
}

/** The reporter a plugin instance makes once. */
export function createReporter(
  options: ShiplogOptions | undefined,
  who: { source: string; userAgent: string },
): {
  options: ShiplogOptions;
  log: { info(msg: string): void; warn(msg: string): void };
  guard<T>(what: string, fn: () => T): T | undefined;
  start(o?: { root?: string; startedAt?: number }): BuildSession;
  setLogger(logger: { info(msg: string, o?: unknown): void; warn(msg: string): void } | null | undefined): void;
};

/** The hooks of the Rollup family (Rollup, Rolldown, Vite) that the Vite and Rollup plugins share. */
export function rollupFamilyHooks(reporter: ReturnType<typeof createReporter>, host: Record<string, unknown>): Record<string, any>;

export function isDisabled(options: ShiplogOptions): boolean;
export function oneLine(e: unknown): string;
export function packageRoot(dir: string): string;
export function packageVersion(root: string, name: string): string | null;
export function projectName(options: ShiplogOptions, root: string): string;
export function readRepository(cwd: string): Promise<{ commit: string | null; branch: string | null }>;
export function renderTemplate(template: string, env: Record<string, string | undefined>): string | number | null;
export function isChunkFile(name: string): boolean;
