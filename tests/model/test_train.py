"""The training loop: typed settings each model declares, early stopping, the budget, observers and the DVCLive log."""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from bgmrec.data.contract import load_dataset
from bgmrec.data.splits import make_split
from bgmrec.models import create_model
from bgmrec.models.base import TorchRecommender, TrainingData
from bgmrec.models.training_config import TrainingConfig
from bgmrec.train import DVCLiveLog, EarlyStopping, TrainingObserver, WallClockBudget, fit

pytestmark = pytest.mark.model

SMALL = {"embedding_dim": 16, "video_hidden": [32], "music_hidden": [16], "batch_size": 64, "progress": False}
SMALL_CMVAE = {"latent_dim": 8, "hidden": 16, "epochs": 1, "progress": False}


@pytest.fixture(scope="module")
def data(tiny_dataset) -> TrainingData:
    dataset = load_dataset(tiny_dataset)
    return TrainingData(dataset, make_split(dataset, "weak", seed=0), seed=0)


def test_each_model_declares_its_training_overrides_and_params_override_them():
    assert TrainingConfig().batch_size == 1024 and TrainingConfig().early_stop_metric == "recall@10"
    cmvae = create_model("cmvae").training_config
    assert (cmvae.batch_size, cmvae.lr, cmvae.weight_decay) == (1024, 1e-3, 1e-3)
    for name in ("vmcml", "vmcml-nosl", "cevar"):
        config = create_model(name).training_config
        assert (config.batch_size, config.lr, config.weight_decay) == (128, 1e-3, 2e-3), name
    tuned = create_model("cmvae", {"lr": 5e-4, "epochs": 3, "weight_decay": 0}).training_config
    assert (tuned.lr, tuned.epochs) == (5e-4, 3)
    assert isinstance(tuned.weight_decay, float)


def test_bad_training_settings_fail_before_training_naming_the_model_and_the_setting(data):
    model = create_model("cmvae", {**SMALL_CMVAE, "batch_size": 1})
    with pytest.raises(ValueError, match="cmvae: batch_size is 1, expected at least 2"):
        fit(model, data)
    assert model.module is None
    with pytest.raises(ValueError, match="vmcml: early_stop_metric 'recall@3' is not one of recall@1, "):
        fit(create_model("vmcml", {"early_stop_metric": "recall@3"}), data)
    with pytest.raises(ValueError, match="lr: 'fast' is a str, expected a float; progress: 1 is a int, expected a b"):
        TrainingConfig(lr="fast", progress=1)
    with pytest.raises(ValueError, match="lr is 0.0, expected a positive number; patience is -1"):
        TrainingConfig(lr=0.0, patience=-1)


def test_a_torch_model_must_declare_the_training_settings():
    with pytest.raises(TypeError, match="Bare.default_params lacks the training settings epochs, batch_size"):

        class Bare(TorchRecommender):
            default_params: dict[str, Any] = {"hidden": 8}


def test_a_torch_model_is_trained_by_the_loop_not_by_itself(data):
    model = create_model("cevar", SMALL)
    with pytest.raises(TypeError, match=r"cevar: a torch model is trained by the training loop, bgmrec\.train\.fit"):
        model.fit(data)
    cca = create_model("cca")  # fits itself (closed form); the same entry point trains it
    assert fit(cca, data)["rows"] == len(data.train_index)
    assert cca.score(data.dataset.video_vectors.subset(np.arange(3)), data.dataset.music_vectors).shape[0] == 3


def test_early_stopping_keeps_the_best_weights_and_stops_after_patience():
    module = torch.nn.Linear(2, 1)
    stopping = EarlyStopping(patience=2)
    kept = None
    for epoch, value in enumerate([0.1, 0.3, 0.2, 0.25]):
        with torch.no_grad():
            module.weight.fill_(float(epoch))
        if stopping.update(epoch, value, module):
            kept = module.weight.detach().clone()
        assert stopping.should_stop == (epoch == 3)
    assert (stopping.best_epoch, stopping.best_value) == (1, 0.3)
    stopping.restore_best(module)
    torch.testing.assert_close(module.weight, kept)
    assert float(module.weight.detach()[0, 0]) == 1.0


def test_wall_clock_budget():
    assert not WallClockBudget(0.0).exceeded()
    budget = WallClockBudget(1e-6)
    time.sleep(0.001)
    assert budget.exceeded() and budget.elapsed >= 0.001


class Recorder(TrainingObserver):
    def __init__(self, fail_at_epoch: int | None = None):
        self.events: list[str] = []
        self.records: list[dict[str, float]] = []
        self.fail_at_epoch = fail_at_epoch

    def __enter__(self) -> Recorder:
        self.events.append("enter")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.events.append("exit")

    def epoch_ended(self, record: dict[str, float]) -> None:
        self.records.append(record)
        if record["epoch"] == self.fail_at_epoch:
            raise RuntimeError("observer failed")

    def finished(self, report: dict[str, Any]) -> None:
        self.events.append(f"finished best {report['best_epoch']}")


def test_observers_see_every_epoch_and_are_closed_when_the_run_fails(data):
    watcher = Recorder()
    report = fit(create_model("cevar", {**SMALL, "epochs": 3, "patience": 3}), data, [watcher])
    assert watcher.records == report["history"] and len(report["history"]) == 3
    assert watcher.events == ["enter", f"finished best {report['best_epoch']}", "exit"]
    failing, bystander = Recorder(fail_at_epoch=0), Recorder()
    with pytest.raises(RuntimeError, match="observer failed"):
        fit(create_model("cevar", {**SMALL, "epochs": 3}), data, [bystander, failing])
    assert failing.events == ["enter", "exit"] and bystander.events == ["enter", "exit"]


def test_dvclive_log_holds_params_epoch_histories_and_the_kept_epoch(data, tmp_path):
    model = create_model("cevar", {**SMALL, "epochs": 4, "patience": 4, "early_stop_metric": "recall@5"})
    live_dir = tmp_path / "dvclive"
    report = fit(model, data, [DVCLiveLog(live_dir, model.params)])
    history, best = report["history"], report["best_epoch"]
    assert len(history) == 4 and 0 <= best < 4

    params = yaml.safe_load((live_dir / "params.yaml").read_text())
    assert params["lr"] == model.params["lr"] and params["video_hidden"] == [32]
    loss = (live_dir / "plots" / "metrics" / "train" / "loss.tsv").read_text().splitlines()
    assert loss[0].split("\t") == ["step", "loss"] and [row.split("\t")[0] for row in loss[1:]] == ["0", "1", "2", "3"]
    assert float(loss[2].split("\t")[1]) == pytest.approx(history[1]["loss"])
    assert (live_dir / "plots" / "metrics" / "val" / "ips_recall@25.tsv").exists()

    summary = json.loads((live_dir / "metrics.json").read_text())
    assert summary["best_epoch"] == best == summary["step"] and summary["epochs"] == 4
    assert summary["val"]["recall@5"] == pytest.approx(history[best]["val_recall@5"])
    assert summary["val"]["recall@5"] == pytest.approx(report["best_val_recall@5"])
    assert summary["train"]["loss"] == pytest.approx(history[best]["loss"])

    report_md = (live_dir / "report.md").read_text()
    assert "static/train/loss.png" in report_md and (live_dir / "static" / "train" / "loss.png").stat().st_size > 0
    assert not (tmp_path / "dvc.yaml").exists() and not (live_dir / "dvc.yaml").exists()


def test_the_training_log_leaves_a_git_repository_without_dvc_alone(tmp_path, monkeypatch):
    """DVCLive on its own runs `dvc init` in the enclosing git repository; a training run must not."""
    import subprocess

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    with DVCLiveLog(tmp_path / "run", {"lr": 0.1}):
        pass
    assert not (tmp_path / ".dvc").exists()
    assert (tmp_path / "run" / "params.yaml").is_file()
