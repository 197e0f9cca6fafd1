#!/usr/bin/env bash
# The README's test command: install what the suite needs on a fresh Debian machine, then run it.
#   torch first, pinned to the CPU build (a bare `torch` requirement would pull CUDA wheels);
#   Debian's chromium for the dashboard's browser test (Playwright drives it; nothing is downloaded),
#   systemd's systemd-analyze for the unit checks (tests/ops/test_systemd.py), and
#   nftables for the NAT testbed's home routers (tests/node/test_nat_swarm.py, root), and
#   postgresql's server binaries for the ledger's PostgreSQL cases (benchmarks/pgserver.py starts one per run).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not swarm"`.
set -euo pipefail
cd "$(dirname "$0")/.."

#   iproute2 (`ip netns`, `tc`) for the shaped-link testbed and the test that kills a bench suite.
DEBS=()
command -v chromium >/dev/null 2>&1 || DEBS+=(chromium)
command -v ip >/dev/null 2>&1 || DEBS+=(iproute2)
command -v nft >/dev/null 2>&1 || DEBS+=(nftables)
command -v systemd-analyze >/dev/null 2>&1 || DEBS+=(systemd)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || DEBS+=(postgresql)
if [ ${#DEBS[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${DEBS[@]}"
fi
python -m pip install -q torch==2.13.0
python -m pip install -q -e '.[dev]'

# pytest exits 5 when it collected no tests: with `set -e` that fails the run, as it should
python -m pytest "$@"
