"""`bgmrec reproduce`: intervals, claim verdicts, and one small table end to end."""

from __future__ import annotations

import json
import math

import pytest

from bgmrec.paper_tables import TABLES
from bgmrec.reproduce import _claims, interval, reproduce_table

pytestmark = pytest.mark.model


@pytest.mark.unit
def test_interval_is_the_t_interval() -> None:
    mean, half = interval([1.0, 2.0, 3.0])
    # sd = 1, t(0.975, 2) = 4.302653, so the half-width is 4.302653 / sqrt(3)
    assert mean == pytest.approx(2.0)
    assert half == pytest.approx(4.302653 / math.sqrt(3), rel=1e-5)
    assert interval([0.25]) == (0.25, 0.0)


@pytest.mark.unit
def test_claim_verdicts_follow_the_paired_interval() -> None:
    table = TABLES["cmvae-5"]
    key = "ips_recall@10"

    def runs(better: list[float], worse: list[float]) -> dict:
        return {table.columns[0]: {"cmvae": [{key: v} for v in better], "cmvae@notext": [{key: v} for v in worse]}}

    holds = _claims(table, runs([0.30, 0.31, 0.32], [0.20, 0.22, 0.21]))
    assert [c["verdict"] for c in holds] == ["holds"]
    assert holds[0]["difference"] == pytest.approx(0.10)
    reversed_ = _claims(table, runs([0.20, 0.21, 0.22], [0.30, 0.30, 0.31]))
    assert [c["verdict"] for c in reversed_] == ["reversed"]
    undecided = _claims(table, runs([0.30, 0.20, 0.25], [0.20, 0.30, 0.25]))
    assert [c["verdict"] for c in undecided] == ["undecided"]


@pytest.mark.unit
def test_every_paper_table_names_models_of_the_model_table() -> None:
    from bgmrec.models import available_models

    known = set(available_models())
    for name, table in TABLES.items():
        for row in table.paper:
            assert row.partition("@")[0] in known, f"{name}: {row}"
        for better, worse in table.claims:
            assert better in table.paper and worse in table.paper, name


@pytest.mark.integration
def test_reproduce_writes_the_table_beside_the_papers(tiny_dataset, tmp_path) -> None:
    report = reproduce_table("cmvae-5", tmp_path, seeds=2, dataset=tiny_dataset, max_epochs=2, log=lambda _: None)
    assert set(report["rows"]) == {"cmvae", "cmvae@notext"}
    for column in TABLES["cmvae-5"].columns:
        cell = report["rows"]["cmvae"][column]["@10"]
        assert cell["n"] == 2 and 0.0 <= cell["mean"] <= 1.0 and cell["ci95"] >= 0.0
    assert len(report["claims"]) == 2  # V + T beats V, for existing and for new music
    saved = json.loads((tmp_path / "cmvae-5.json").read_text())
    assert saved["rows"] == report["rows"]
    table = (tmp_path / "cmvae-5.md").read_text()
    assert "0.2606" in table and "V + T beats V" in table
    assert (tmp_path / "cmvae-5.png").stat().st_size > 10_000


@pytest.mark.integration
def test_a_fit_is_reused_across_tables_and_redone_when_its_parameters_change(tiny_dataset, tmp_path) -> None:
    first = reproduce_table("cmvae-5", tmp_path, seeds=1, dataset=tiny_dataset, max_epochs=1, log=lambda _: None)
    lines: list[str] = []
    again = reproduce_table("cmvae-5", tmp_path, seeds=1, dataset=tiny_dataset, max_epochs=1, log=lines.append)
    reused = [line for line in lines if "fitted before" in line]
    assert len(reused) == 2 and all(line.startswith("cmvae:") for line in reused)  # weak and strong, seed 0
    assert again["rows"] == first["rows"]
    lines.clear()
    reproduce_table("cmvae-5", tmp_path, seeds=1, dataset=tiny_dataset, max_epochs=2, log=lines.append)
    assert not [line for line in lines if "fitted before" in line]
