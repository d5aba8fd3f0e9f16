"""The codebase's structure, checked: one-way layers (import-linter's contracts in pyproject.toml) and small
modules."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAX_MODULE_LINES = 450

pytestmark = pytest.mark.unit


def test_import_contracts_hold() -> None:
    """Domain layers data → models → training/evaluation → steps → commands, adapters never imported by bgmrec."""
    lint_imports = Path(sys.executable).parent / "lint-imports"
    done = subprocess.run([str(lint_imports), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


@pytest.mark.parametrize("package", ["bgmrec", "serving"])
def test_modules_are_small(package: str) -> None:
    too_long = {str(path.relative_to(ROOT)): lines for path in sorted((ROOT / package).rglob("*.py"))
                if (lines := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not too_long, f"modules over {MAX_MODULE_LINES} lines: {too_long}"
