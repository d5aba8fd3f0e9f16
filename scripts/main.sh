#!/usr/bin/env bash
# The main job: set up the machine if needed, then reproduce the whole flow with DVC (dvc.yaml): sample media →
# validate → extract → validate → Feast → train CMVAE + VMCML → evaluate → gate. Extra arguments go to
# `dvc repro` (e.g. `bash scripts/main.sh --force`). Results: `dvc metrics show`, `dvc plots show`, reports/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
export BENTOML_DO_NOT_TRACK=true GX_ANALYTICS_ENABLED=false DVC_NO_ANALYTICS=1
# A fresh clone carries .dvc/config (analytics off, a local-directory remote in .dvc/storage); a copy made
# without it gets the same configuration here. `dvc init` is not used because it stages files in git.
if [ ! -f .dvc/config ]; then
  mkdir -p .dvc
  printf '[core]\n    analytics = false\n    remote = local\n['"'"'remote "local"'"'"']\n    url = storage\n' \
    > .dvc/config
  printf '/config.local\n/tmp\n/cache\n/storage\n' > .dvc/.gitignore
fi
dvc repro "$@"
# Raw media, features and checkpoints go to the default remote (a local directory unless docs/data.md's S3/GCS
# setup replaced it), so another clone can `dvc pull` instead of recomputing.
dvc push --quiet
dvc metrics show
