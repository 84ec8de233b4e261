#!/usr/bin/env bash
# Installs the Debian packages the tests need when they are missing: Chromium (the
# dashboard test drives it headless) and python3-venv (the migration-tool and pyarrow
# tests). Does nothing when both are present. Uses sudo when not root.
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || [ -n "${SHIPLOG_CHROMIUM:-}" ] || need+=(chromium)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "setup-test-system: please install ${need[*]} (no apt-get on this machine)" >&2
  exit 1
fi
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
echo "setup-test-system: installing ${need[*]}" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
