#!/usr/bin/env bash
# Debian's Chromium for the browser tests (tests/ui/test_browser.py and others). Playwright drives
# it through `executable_path`; no browser is ever downloaded (`playwright install` is not used).
# Idempotent: nothing to do when /usr/bin/chromium exists. Installing needs root; without root it
# says how and carries on, and the browser tests skip themselves.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "==> Chromium is missing, so the browser tests will be skipped; as root: apt-get install -y chromium" >&2
  exit 0
fi
echo "==> installing Debian's chromium for the browser tests"
export DEBIAN_FRONTEND=noninteractive
# A fresh container has no package lists yet: fetch them only when the package is unknown.
if ! apt-cache show chromium >/dev/null 2>&1; then
  apt-get update -qq
fi
apt-get install -y -qq chromium >/dev/null
echo "==> $(/usr/bin/chromium --version 2>/dev/null || echo chromium installed)"
