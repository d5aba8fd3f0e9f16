#!/usr/bin/env bash
# Set up a fresh machine: a virtualenv in .venv with the locked development stack (requirements/dev.txt) and bgmrec
# installed editable on top. Idempotent: re-installs only when pyproject.toml or the lock changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
LOCK=requirements/dev.txt
# The browser tests (tests/integration/test_report.py, tests/integration/test_page.py) drive Debian's Chromium through its chromedriver.
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
  else
    echo "setup: no /usr/bin/chromium or /usr/bin/chromedriver, and no root apt-get to install them: the browser" \
      "tests skip (under CI=true they fail)" >&2
  fi
fi
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=$(cat pyproject.toml "$LOCK" | sha256sum | cut -d' ' -f1)
if [ ! -f .venv/.setup-stamp ] || [ "$(cat .venv/.setup-stamp)" != "$stamp" ]; then
  .venv/bin/pip install --quiet --upgrade pip
  # The lock pins torch==2.13.0+cpu: pip finds it through find-links (the CPU wheel on disk) or the CPU index in
  # the pip configuration, never the multi-GB CUDA build.
  .venv/bin/pip install --quiet -r "$LOCK"
  # A venv made from an older lock keeps packages the new one dropped, and they would hide an undeclared import
  # from the tests: remove whatever the lock does not list.
  stale=$(.venv/bin/python - "$LOCK" <<'EOF'
import re
import sys
from importlib.metadata import distributions


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


with open(sys.argv[1]) as lock:
    locked = {norm(re.split(r"[=\[ ;]", line, maxsplit=1)[0]) for line in lock if re.match(r"[A-Za-z0-9]", line)}
installed = {norm(dist.metadata["Name"]) for dist in distributions()}
print(" ".join(sorted(installed - locked - {"pip", "setuptools", "wheel", "bgmrec"})))
EOF
)
  if [ -n "$stale" ]; then
    # shellcheck disable=SC2086 # one name per word
    .venv/bin/pip uninstall --quiet --yes $stale
  fi
  # Dependencies come from the lock only; bgmrec itself is editable so the tests run the working tree.
  .venv/bin/pip install --quiet --no-deps -e .
  echo "$stamp" > .venv/.setup-stamp
fi
export BENTOML_DO_NOT_TRACK=true GX_ANALYTICS_ENABLED=false
