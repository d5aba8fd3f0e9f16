"""`bgmrec benchmark` progress: nothing for a short run, the steps and a torch model's epochs for a longer one."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from bgmrec import benchmark

pytestmark = pytest.mark.model


def _terminal() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=True, width=120), out


def _text(out: io.StringIO) -> str:
    """What a terminal would have been sent, without the colour and cursor control sequences."""
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())


@pytest.mark.integration
def test_a_short_benchmark_prints_only_its_result_lines(tiny_dataset):
    console, out = _terminal()
    benchmark.run_benchmark(tiny_dataset, "weak", ["random", "popular"], log=console.print, console=console)
    printed = _text(out)
    assert "random: recall@1" in printed and "popular: recall@1" in printed
    assert "fitting" not in printed and "evaluating" not in printed


@pytest.mark.integration
@pytest.mark.slow
def test_a_longer_benchmark_shows_its_steps_and_the_epochs_of_a_torch_model(tiny_dataset, monkeypatch):
    monkeypatch.setattr(benchmark, "PROGRESS_DELAY_S", 0.0)
    console, out = _terminal()
    params = {"vmcml": {"epochs": 3, "patience": 3}}
    result = benchmark.run_benchmark(tiny_dataset, "weak", ["random", "vmcml"], params=params, log=console.print,
                                     console=console)
    printed = _text(out)
    # each step is drawn when it starts: an evaluation on the tiny data is shorter than rich's refresh interval
    assert "fitting vmcml" in printed and "evaluating vmcml" in printed
    # the epoch bar, drawn as each epoch ends (it is hidden once the fit ends)
    assert re.search(r"epochs \(loss [0-9.]+\) \S+ [12]/3", printed), printed
    assert "vmcml: recall@1" in printed
    assert result["results"]["vmcml"]["epochs"] == 3
