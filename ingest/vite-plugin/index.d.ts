import type { Plugin } from 'vite';
import type { BuildAsset, BuildChunk, ShiplogOptions } from 'shiplog-collector-core';

export type {
  BuildAsset,
  BuildChunk,
  BuildCi,
  BuildData,
  BuildEvent,
  BuildPhase,
  DeliveryOutcome,
  ShiplogOptions,
} from 'shiplog-collector-core';
export { deliver, detectCi, detectGit, errorText, spoolDirFor } from 'shiplog-collector-core';

/** The Vite plugin. */
export default function shiplog(options?: ShiplogOptions): Plugin;
export { shiplog };

/** Chunk and asset sizes of an output bundle. */
export function measureBundle(bundle: Record<string, unknown> | null): Promise<{
  chunks: BuildChunk[];
  assets: BuildAsset[];
  bundleBytes: number;
  gzipBytes: number;
  sourcemapBytes: number;
} | null>;
