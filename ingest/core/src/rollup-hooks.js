// The build hooks of the Rollup family (Rollup 4, Rolldown, Vite 7 and 8), shared by the
// Vite plugin and the Rollup plugin: one session per build (per environment on Vite 6+),
// phases transform / render / write, module counts, and the output handed to the sizer
// at generateBundle (so gzip runs while the bundler writes) and checked again at
// writeBundle (a later plugin may have changed a file).

import { relative } from 'node:path';

/**
 * @param {ReturnType<typeof import('./event.js').createReporter>} reporter
 * @param {{
 *   root: () => string,
 *   takeStart: () => number | null,
 *   watch: () => boolean,
 *   data: (st: any) => Record<string, any>,
 * }} host what the wrapping plugin knows: the root, the start of the build when it began
 *   before buildStart (Vite's config hook), watch mode, and the tool fields of the event
 */
export function rollupFamilyHooks(reporter, host) {
  const { guard } = reporter;
  /** Per-environment state (Vite 6+ may build several environments with one plugin). */
  const states = new Map();
  let last = null;

  const envName = (ctx) => {
    try {
      return ctx?.environment?.name ?? null;
    } catch {
      return null;
    }
  };

  function stateOf(ctx) {
    const name = envName(ctx);
    return states.get(name || 'client') || (!name || name === 'client' ? last : null);
  }

  function newState(ctx) {
    const now = Date.now();
    const environment = envName(ctx);
    const meta = ctx?.meta || {};
    const st = {
      environment: environment && environment !== 'client' ? environment : null,
      session: reporter.start({ root: host.root(), startedAt: host.takeStart() ?? now }),
      buildStartAt: now,
      buildEndAt: 0,
      generateEndAt: 0,
      writeEndAt: 0,
      meta,
      modulesTransformed: null,
      modulesTotal: null,
      firstDir: null,
      seen: new Map(),
    };
    states.set(environment || 'client', st);
    last = st;
    return st;
  }

  function countModules(ctx, st) {
    try {
      const ids = [...ctx.getModuleIds()];
      let external = 0;
      for (const id of ids) {
        // Rollup reports externals in getModuleIds; Rolldown leaves isExternal undefined.
        if (ctx.getModuleInfo(id)?.isExternal === true) external++;
      }
      st.modulesTotal = ids.length;
      st.modulesTransformed = ids.length - external;
    } catch {
      /* the bundler does not expose the module graph: leave the counts null */
    }
  }

  /** Hands the bundle's files to the sizer (again only those whose content changed). */
  function handOver(st, outputOptions, bundle) {
    const dir = outputOptions?.dir || (outputOptions?.file ? outputOptions.file.replace(/[\\/][^\\/]*$/, '') : null);
    if (st.firstDir === null) st.firstDir = dir || '';
    const prefix = dir && dir !== st.firstDir ? `${relative(host.root(), dir).split('\\').join('/')}/` : '';
    for (const item of Object.values(bundle || {})) {
      if (!item || typeof item.fileName !== 'string') continue;
      const content = item.type === 'chunk' ? item.code : item.source;
      const name = prefix + item.fileName;
      if (st.seen.get(name) === content) continue;
      st.seen.set(name, content);
      st.session.addOutput({
        name,
        type: item.type === 'chunk' ? 'chunk' : 'asset',
        content,
        chunk_name: item.type === 'chunk' ? (item.name ?? null) : undefined,
        is_entry: !!item.isEntry,
        dynamic_import: !!item.isDynamicEntry,
      });
    }
  }

  async function report(st) {
    const s = st.session;
    if (s.reported) return;
    const end = Date.now();
    if (s.startedAt < st.buildStartAt) s.phase('config', s.startedAt, st.buildStartAt);
    s.phase('transform', st.buildStartAt, st.buildEndAt || (s.error ? end : 0));
    s.phase('render', st.buildEndAt, st.generateEndAt || (s.error && st.buildEndAt ? end : 0));
    s.phase('write', st.generateEndAt, st.writeEndAt || end);
    await s.report({
      environment: st.environment,
      endAt: end,
      data: {
        ...host.data(st),
        modules_transformed: st.modulesTransformed,
        modules_total: st.modulesTotal,
        ...(host.watch() ? { watch: true } : {}),
      },
    });
  }

  /** Records a failure (the first one wins) and reports right away. */
  async function fail(ctx, err) {
    const st = stateOf(ctx) || newState(ctx);
    if (st.session.reported) return;
    if (!st.session.error) st.session.error = err;
    await report(st);
  }

  return {
    buildStart() {
      guard('buildStart', () => {
        newState(this);
      });
    },

    async buildEnd(err) {
      await guard('buildEnd', async () => {
        const st = stateOf(this) || newState(this);
        st.buildEndAt = Date.now();
        countModules(this, st);
        // Report now: not every bundler calls closeBundle after a failed build.
        if (err) await fail(this, err);
      });
    },

    async renderError(err) {
      await guard('renderError', () => fail(this, err));
    },

    generateBundle: {
      order: 'post',
      handler(outputOptions, bundle) {
        guard('generateBundle', () => {
          const st = stateOf(this);
          if (!st) return;
          st.generateEndAt = Date.now();
          handOver(st, outputOptions, bundle);
        });
      },
    },

    writeBundle: {
      order: 'post',
      sequential: true,
      async handler(outputOptions, bundle) {
        await guard('writeBundle', async () => {
          const st = stateOf(this);
          if (!st) return;
          st.writeEndAt = Date.now();
          handOver(st, outputOptions, bundle);
          // In watch mode closeBundle only runs when the watcher stops: report each rebuild here.
          if (host.watch()) await report(st);
        });
      },
    },

    async closeBundle(err) {
      await guard('closeBundle', async () => {
        const st = stateOf(this);
        if (!st || st.session.reported) return;
        if (err && !st.session.error) st.session.error = err;
        await report(st);
      });
    },

    /** Forgets the states of the previous build (a new `vite build` with the same plugin). */
    reset() {
      states.clear();
      last = null;
    },
  };
}
