#!/usr/bin/env bash
# Installs the Debian packages the tests need when they are missing: Chromium (the
# dashboard test drives it headless), python3-venv (the migration-tool and pyarrow
# tests) and prometheus (the rollback rules' Prometheus source test starts its own server
# on a free loopback port). Does nothing when all are present. Uses sudo when not root.
set -euo pipefail
need=()
need_norec=()
command -v chromium >/dev/null 2>&1 || [ -n "${SHIPLOG_CHROMIUM:-}" ] || need+=(chromium)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
command -v prometheus >/dev/null 2>&1 || [ -n "${SHIPLOG_PROMETHEUS:-}" ] || need_norec+=(prometheus)
if [ ${#need[@]} -eq 0 ] && [ ${#need_norec[@]} -eq 0 ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "setup-test-system: please install ${need[*]} ${need_norec[*]} (no apt-get on this machine)" >&2
  exit 1
fi
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
echo "setup-test-system: installing ${need[*]} ${need_norec[*]}" >&2
# Debian's prometheus package starts a system service on :9090 (and recommends the node
# exporter on :9100). The tests start their own server: keep the package from starting
# any service while it installs (policy-rc.d, which invoke-rc.d and deb-systemd-invoke
# obey), and install without recommends.
policy=/usr/sbin/policy-rc.d
added_policy=""
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
  $SUDO chmod 755 "$policy"
  added_policy=1
fi
cleanup() { [ -z "$added_policy" ] || $SUDO rm -f "$policy"; }
trap cleanup EXIT
$SUDO apt-get update -qq
if [ ${#need[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [ ${#need_norec[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_norec[@]}" >/dev/null
fi
# If a service manager started it anyway, stop it and keep it off.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
fi
