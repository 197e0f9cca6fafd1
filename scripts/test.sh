#!/usr/bin/env bash
# The README's test command: install what the suite needs on a fresh Debian machine, then run it.
#   torch first, pinned to the CPU build (a bare `torch` requirement would pull CUDA wheels);
#   Debian's chromium for the dashboard's browser test (Playwright drives it; nothing is downloaded).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not swarm"`.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends chromium
fi
python -m pip install -q torch==2.13.0
python -m pip install -q -e '.[dev]'

# pytest exits 5 when it collected no tests: with `set -e` that fails the run, as it should
python -m pytest "$@"
