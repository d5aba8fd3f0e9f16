"""Runs that are killed leave nothing running: a `bgmrec` stage command dies with the `dvc repro` that started it.

The parent here stands in for DVC: a Python process that sets DVC_STAGE and runs the stage's command through a
shell, as DVC does; it is then killed with SIGKILL, which it cannot pass on.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.reliability, pytest.mark.integration]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc (Linux)")
def test_a_stage_command_dies_with_a_killed_dvc(tmp_path):
    bgmrec = Path(sys.executable).parent / "bgmrec"
    # A long stage: simulating a TT-150k-sized dataset takes about a minute on 2 cores.
    command = f"{bgmrec} simulate --preset tt150k --out {tmp_path / 'sim'}"
    fake_dvc = textwrap.dedent(f"""
        import os, subprocess, time
        env = {{**os.environ, "DVC_STAGE": "simulate", "DVC_ROOT": {str(tmp_path)!r}}}
        child = subprocess.Popen(["/bin/sh", "-c", {command!r} + " ; true"], env=env)
        print(child.pid, flush=True)
        child.wait()
    """)
    dvc = subprocess.Popen([sys.executable, "-c", fake_dvc], stdout=subprocess.PIPE, text=True,
                           start_new_session=True)
    try:
        shell = int(dvc.stdout.readline())
        deadline = time.monotonic() + 30
        while not (stage := _children(shell)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert stage, "the stage command did not start"
        (stage_pid,) = stage
        time.sleep(3)  # past start-up: the command is working
        assert _alive(stage_pid)
        os.kill(dvc.pid, signal.SIGKILL)
        dvc.wait()
        deadline = time.monotonic() + 10
        while _alive(stage_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(stage_pid), "the stage command outlived the killed dvc"
        assert not _alive(shell)
    finally:
        try:
            os.killpg(dvc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_without_dvc_nothing_is_watched():
    from bgmrec.lifecycle import die_with_dvc

    assert die_with_dvc({}) is False


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["production.json", "catalog.parquet", "checkpoint", "other model"])
def test_bgmrec_serve_on_a_damaged_registry_fails_once_with_one_clear_line(tmp_path, damage):
    """Not a server whose worker fails to start again and again: exit 1 within seconds, naming the file."""
    import numpy as np
    import torch

    from bgmrec.catalog import MusicCatalog
    from bgmrec.registry import ModelRegistry

    registry = ModelRegistry(tmp_path / "registry")
    checkpoint = tmp_path / "model.pt"
    torch.save({"name": "cmvae", "params": {}}, checkpoint)
    version = registry.register(checkpoint, {}, "cmvae")
    registry.promote(version)
    ids = np.array(["a", "b"], dtype=object)

    def catalog(model_version: str) -> None:
        MusicCatalog(ids, ids, np.eye(2, dtype=np.float32), np.zeros(2), np.zeros(2, bool),
                     model_version=model_version).save(registry.root / "catalog.parquet")

    catalog(version)
    truncated = {"production.json": registry.root / "production.json",
                 "catalog.parquet": registry.root / "catalog.parquet",
                 "checkpoint": registry.checkpoint(version)}.get(damage)
    if truncated is not None:
        truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    else:
        catalog("v9999-other")
    started = time.monotonic()
    result = subprocess.run([str(Path(sys.executable).parent / "bgmrec"), "serve", "--registry",
                             str(registry.root)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and time.monotonic() - started < 30
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    expected = {"production.json": "production.json is damaged", "catalog.parquet": "catalog.parquet is damaged",
                "checkpoint": "checkpoint cannot be loaded", "other model": "embedded by model v9999-other"}
    assert expected[damage] in lines[0], lines[0]
