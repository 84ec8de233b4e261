// Sizes of a build's output: chunks and assets with bytes and gzip bytes. Gzip runs on
// libuv's thread pool (node:zlib's async API), at most GZIP_CONCURRENCY files at a time,
// and starts as soon as a plugin hands a file over: while the bundler is still writing,
// not after it. Source maps are not shipped to users: they are totalled apart.

import { readFileSync } from 'node:fs';

/** Files larger than this are not gzipped (their raw size is used). */
const GZIP_MAX_BYTES = 32 << 20;
const GZIP_CONCURRENCY = 4;
/** Formats that are already compressed: their gzip size is their size. */
const COMPRESSED_EXT = /\.(png|jpe?g|gif|webp|avif|ico|woff2?|mp3|mp4|webm|ogg|zip|gz|br|zst)$/i;
const CHUNK_EXT = /\.(m?js|cjs)$/i;

/** Whether a file name is a script chunk (else an asset). */
export const isChunkFile = (name) => CHUNK_EXT.test(name);

function toBuffer(content) {
  if (typeof content === 'string') return Buffer.from(content, 'utf8');
  if (content instanceof Uint8Array) return Buffer.from(content.buffer, content.byteOffset, content.byteLength);
  return Buffer.alloc(0);
}

/** node:zlib, loaded when a build starts (preloadGzip) or with the first file to measure. */
let zlib = null;

/** Starts loading node:zlib (while the bundler works, not when its output is there). */
export function preloadGzip() {
  zlib ??= import('node:zlib');
  zlib.catch(() => {});
}

async function gzipLength(buf) {
  zlib ??= import('node:zlib');
  const { gzip, constants } = await zlib;
  return new Promise((done) => {
    gzip(buf, { level: constants.Z_DEFAULT_COMPRESSION }, (err, out) => done(err ? null : out.length));
  });
}

/**
 * Collects output files and measures them.
 * `add({name, type?, content?, path?, chunk_name?, is_entry?, dynamic_import?})`: `type`
 * defaults from the extension; `content` (string or bytes) or `path` (read from disk).
 */
export function createSizer() {
  /** @type {Map<string, any>} */
  const items = new Map();
  const queue = [];
  let running = 0;
  const pump = () => {
    while (running < GZIP_CONCURRENCY && queue.length) {
      const job = queue.shift();
      running++;
      job().finally(() => {
        running--;
        pump();
      });
    }
  };
  const schedule = (fn) =>
    new Promise((done) => {
      queue.push(() => fn().then(done, () => done(null)));
      pump();
    });

  return {
    /** Hands one output file over; its gzip size is measured in the background. */
    add(file) {
      if (!file || typeof file.name !== 'string') return;
      const name = file.name.split('\\').join('/');
      const type = file.type || (isChunkFile(name) ? 'chunk' : 'asset');
      const entry = { name, type, file, bytes: 0, gzip: null };
      items.set(name, entry);
      entry.gzip = schedule(async () => {
        // A synchronous read: an output file is read once, at once (fs/promises would add
        // four thread-pool round trips per file).
        const buf = file.content !== undefined ? toBuffer(file.content) : readFileSync(file.path);
        entry.bytes = buf.length;
        if (name.endsWith('.map') || buf.length === 0) return 0;
        if (COMPRESSED_EXT.test(name) || buf.length > GZIP_MAX_BYTES) return buf.length;
        return gzipLength(buf);
      });
    },
    get size() {
      return items.size;
    },
    /** Waits for every measurement; null when no file was handed over. */
    async result() {
      if (!items.size) return null;
      const chunks = [];
      const assets = [];
      let sourcemapBytes = 0;
      for (const e of items.values()) {
        const gz = await e.gzip;
        if (e.name.endsWith('.map')) {
          sourcemapBytes += e.bytes;
          continue;
        }
        if (e.type === 'chunk') {
          chunks.push({
            name: e.name,
            chunk_name: e.file.chunk_name ?? null,
            bytes: e.bytes,
            gzip_bytes: gz,
            is_entry: !!e.file.is_entry,
            dynamic_import: !!e.file.dynamic_import,
          });
        } else {
          assets.push({ name: e.name, bytes: e.bytes, gzip_bytes: gz });
        }
      }
      const byName = (a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
      chunks.sort(byName);
      assets.sort(byName);
      const all = [...chunks, ...assets];
      return {
        chunks,
        assets,
        bundleBytes: all.reduce((s, x) => s + x.bytes, 0),
        gzipBytes: all.reduce((s, x) => s + (x.gzip_bytes ?? x.bytes), 0),
        sourcemapBytes,
      };
    },
  };
}
