#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite, in parallel (pytest-xdist, one worker per core).
#
#   bash scripts/test.sh [PYTEST ARGS...]     e.g. -n 0 for a serial run, -k weights for a subset
#
# Each worker runs torch single-threaded (unless OMP_NUM_THREADS is set): N workers x N threads
# would oversubscribe the cores. --dist loadscope keeps a module's tests on one worker, so the
# module-scoped fixtures (tiny releases, sample clips) are built once, not once per worker.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
exec .venv/bin/python -m pytest -q -n "${UAV_TEST_WORKERS:-auto}" --dist loadscope "$@"
