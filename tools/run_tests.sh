#!/usr/bin/env bash
# The README's test command: the main pytest run (tests + one-shot benchmark smoke run), then the Triton
# kernels on the CPU under TRITON_INTERPRET=1 in a separate process (Triton reads the variable at import).
# On a machine with a GPU the first run already covers the Triton and CUDA tests.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
$PY -m pytest "$@"
TRITON_INTERPRET=1 $PY -m pytest -m triton tests "$@"
