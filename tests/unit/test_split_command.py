"""`bgmrec split`: its help lists every split kind the code makes, it makes each of them, and an unknown kind is an
error naming the kind rather than a traceback."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from bgmrec.cli import app
from bgmrec.data.split_kinds import SPLIT_KINDS

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from bgmrec.data.simulate import simulate

    out = tmp_path_factory.mktemp("tiny")
    simulate("tiny", seed=0, out=out)
    return out


@pytest.mark.parametrize("command", ["split", "benchmark", "train"])
def test_the_help_lists_every_split_kind(command):
    result = CliRunner().invoke(app, [command, "--help"], terminal_width=200)
    assert result.exit_code == 0
    assert all(kind in result.output for kind in SPLIT_KINDS), result.output


def test_a_seen_unseen_split_reports_its_unseen_part(dataset):
    result = CliRunner().invoke(app, ["split", "--dataset", str(dataset), "--kind", "seen-unseen"])
    assert result.exit_code == 0, result.output
    assert "'unseen': " in result.output
    assert (dataset / "splits" / "seen-unseen.parquet").is_file()


def test_an_unknown_kind_is_refused_naming_it(dataset):
    result = CliRunner().invoke(app, ["split", "--dataset", str(dataset), "--kind", "weakest"])
    assert result.exit_code == 1
    assert "unknown split kind 'weakest'" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
