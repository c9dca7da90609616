#!/usr/bin/env bash
# Installs everything the tests need into ./.venv (torch from local disk where it lies there), then
# runs the test suite. Extra arguments go to pytest, e.g. `./test.sh -m slow` for whole-size runs.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/venv.sh
# Browser tests drive Debian's Chromium with Playwright (playwright cannot download a browser here).
if ! command -v chromium >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing Debian's chromium for the browser tests..."
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  fi
fi
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
