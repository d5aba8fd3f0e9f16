"""The built-in defaults agree with the project's params.yaml where a run without a params file must behave like
`dvc repro` (the gate)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bgmrec.config import GateSettings

pytestmark = pytest.mark.unit

PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


def test_the_gate_defaults_are_the_projects_gate_block():
    assert GateSettings().model_dump() == yaml.safe_load(PARAMS.read_text())["gate"]
