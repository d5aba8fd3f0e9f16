#!/usr/bin/env bash
# The test command: set up the machine if needed, then run the whole test suite on CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export BENTOML_DO_NOT_TRACK=true GX_ANALYTICS_ENABLED=false
.venv/bin/python -m pytest -q "$@"
