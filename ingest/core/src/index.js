// shiplog-collector-core: what every shiplog bundler plugin shares. No runtime
// dependencies: Node built-ins only (no global fetch either: see deliver.js).

export { ciProviders, detectCi, detectCiRun, renderTemplate } from './ci.js';
export { deliver, preconnect, spoolDirFor } from './deliver.js';
export { createReporter, errorText, isDisabled, oneLine, packageRoot, packageVersion, projectName } from './event.js';
export { detectGit, readRepository } from './git.js';
export { createSizer, isChunkFile } from './sizes.js';
export { rollupFamilyHooks } from './rollup-hooks.js';
