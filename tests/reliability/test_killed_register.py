"""A gate killed inside `ModelRegistry.register` leaves a version folder without its metrics; the next gate
registers and promotes as if it were not there.

The window (between the folder's creation and its metrics.json) is a few milliseconds wide, too narrow for the
`dvc repro` kill test to hit reliably, so the states a SIGKILL can leave there are made here directly.
"""

from __future__ import annotations

import shutil

import pytest

pytestmark = [pytest.mark.reliability, pytest.mark.unit]


@pytest.mark.parametrize("left", ["empty folder", "checkpoint copied"])
def test_a_register_killed_half_way_does_not_block_the_next(tmp_path, left):
    import torch

    from bgmrec.registry import CHECKPOINT_FILE, ModelRegistry

    checkpoint = tmp_path / "model.pt"
    torch.save({"name": "cmvae", "params": {}}, checkpoint)
    registry = ModelRegistry(tmp_path / "registry")
    half_written = registry.versions_dir / "v0001-cmvae"
    half_written.mkdir(parents=True)
    if left == "checkpoint copied":
        shutil.copy2(checkpoint, half_written / CHECKPOINT_FILE)

    version = registry.register(checkpoint, {"weak": {"test": {"recall@1": 0.5}}}, "cmvae")
    registry.promote(version)
    assert registry.versions() == [version] and registry.production()["version"] == version
    assert registry.register(checkpoint, {}, "cmvae") == version, "the same checkpoint registered twice"
