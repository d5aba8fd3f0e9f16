#!/usr/bin/env bash
# Set up a fresh machine: a virtualenv in .venv with bgmrec and its whole stack (offline-capable registries only).
# Idempotent: re-installs only when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f .venv/.setup-stamp ] || [ "$(cat .venv/.setup-stamp)" != "$stamp" ]; then
  .venv/bin/pip install --quiet --upgrade pip
  # torch==2.13.0 is pinned in pyproject.toml so pip takes the CPU wheel on disk, not a multi-GB CUDA build.
  .venv/bin/pip install --quiet -e '.[dev]'
  echo "$stamp" > .venv/.setup-stamp
fi
export BENTOML_DO_NOT_TRACK=true GX_ANALYTICS_ENABLED=false
