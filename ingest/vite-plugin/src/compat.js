// The helpers vite-plugin-shiplog 0.1 exported, now from shiplog-collector-core.

import { createSizer, deliver, detectCi, detectGit, errorText, spoolDirFor } from 'shiplog-collector-core';

export { deliver, detectCi, detectGit, errorText, spoolDirFor };

/**
 * Sizes of a Rollup/Rolldown output bundle (the object generateBundle receives).
 * @param {Record<string, any> | null} bundle
 */
export async function measureBundle(bundle) {
  if (!bundle || typeof bundle !== 'object') return null;
  const sizer = createSizer();
  for (const item of Object.values(bundle)) {
    if (!item || typeof item.fileName !== 'string') continue;
    sizer.add({
      name: item.fileName,
      type: item.type === 'chunk' ? 'chunk' : 'asset',
      content: item.type === 'chunk' ? item.code : item.source,
      chunk_name: item.name ?? null,
      is_entry: !!item.isEntry,
      dynamic_import: !!item.isDynamicEntry,
    });
  }
  return sizer.result();
}
