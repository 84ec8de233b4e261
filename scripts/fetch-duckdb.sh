#!/usr/bin/env bash
# Fetches DuckDB's official prebuilt shared library (the same build DuckDB
# publishes) from the npm registry, so nothing compiles DuckDB from source.
# Result: .duckdb/lib/libduckdb.so (or .dylib). Idempotent.
set -euo pipefail
VERSION="1.5.6-r.1"
here="$(cd "$(dirname "$0")/.." && pwd)"
dest="$here/.duckdb/lib"
case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) pkg=linux-x64; lib=libduckdb.so ;;
  Linux-aarch64) pkg=linux-arm64; lib=libduckdb.so ;;
  Darwin-arm64) pkg=darwin-arm64; lib=libduckdb.dylib ;;
  Darwin-x86_64) pkg=darwin-x64; lib=libduckdb.dylib ;;
  *) echo "fetch-duckdb: unsupported platform $(uname -s)-$(uname -m); build with --features bundled" >&2; exit 1 ;;
esac
if [ -f "$dest/$lib" ] && [ -f "$dest/.version" ] && [ "$(cat "$dest/.version")" = "$VERSION-$pkg" ]; then
  exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "fetch-duckdb: downloading @duckdb/node-bindings-$pkg@$VERSION from the npm registry" >&2
(cd "$tmp" && npm pack --silent "@duckdb/node-bindings-$pkg@$VERSION" >/dev/null)
tar -xzf "$tmp"/*.tgz -C "$tmp"
mkdir -p "$dest"
cp "$tmp/package/$lib" "$dest/$lib"
echo "$VERSION-$pkg" > "$dest/.version"
echo "fetch-duckdb: installed $dest/$lib" >&2
