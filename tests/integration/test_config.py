"""The typed configuration: defaults, validation that names the bad key, and one parameter resolver for every
driver (`bgmrec train` and the KFP training component train with identical parameters)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from bgmrec.config import Config, ConfigError, load_config, parse_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.unit
def test_defaults_and_the_projects_params_are_valid():
    assert Config().gate.model in Config().models
    config = load_config(ROOT / "params.yaml")
    assert config.data.dataset == "data/sample"
    assert config.model_params("cmvae")["batch_size"] == config.train.overrides["batch_size"]


@pytest.mark.unit
def test_every_key_round_trips_through_yaml():
    config = load_config(ROOT / "params.yaml")
    assert parse_config(yaml.safe_load(config.to_yaml())) == config


@pytest.mark.unit
@pytest.mark.parametrize(
    ("mapping", "named"),
    [
        ({"gaet": {}}, "gaet: Extra inputs are not permitted"),
        ({"gate": {"tolerance": "0.1"}}, "gate.tolerance: Input should be a valid number"),
        ({"gate": {"thresholds": {"weak.recall@1": float("nan")}}}, "gate.thresholds"),
        ({"data": {"seed": True}}, "data.seed"),
        ({"serving": {"max_k": 0}}, "serving.max_k"),
        ({"kubeflow": {"extract_shards": 0}}, "kubeflow.extract_shards"),
        ({"models": {"cmvae": {"lr": "fast"}}}, "models.cmvae.lr: 'fast' is a str, expected a float"),
        ({"models": {"cmvae": {"learning_rate": 0.1}}}, "models.cmvae: cmvae: unknown parameter(s) learning_rate"),
        ({"train": {"overrides": {"batch_size": "64"}}}, "models.cmvae.batch_size"),
        ({"models": {"cmvae": {}, "nope": {}}}, "models.nope: unknown model 'nope'"),
        ({"gate": {"model": "vmcml"}, "models": {"cmvae": {}}}, "gate.model: 'vmcml' is not under models"),
        ({"extract": {"fps": "3"}}, "fps: '3' is a str"),
        ({"extract": {"fpss": 3.0}}, "unknown key(s) ['fpss']"),
        ({"batch": {"max_rejected_fraction": 2.0}}, "max_rejected_fraction=2.0 is not in [0, 1]"),
    ],
)
def test_a_bad_configuration_fails_naming_the_key(mapping, named):
    with pytest.raises(ConfigError) as error:
        parse_config(mapping, "params.yaml")
    assert named in str(error.value)
    assert str(error.value).startswith("params.yaml: ")


@pytest.mark.unit
def test_the_cli_refuses_a_bad_params_file_at_once(tmp_path):
    from bgmrec.cli import app

    bad = tmp_path / "params.yaml"
    bad.write_text("gate:\n  tolerance: high\n")
    result = CliRunner().invoke(app, ["build-catalog", "--params", str(bad)])
    assert result.exit_code == 1
    assert "gate.tolerance: Input should be a valid number" in result.output


@pytest.mark.unit
def test_serving_settings_take_environment_overrides():
    settings = Config().serving.with_env({"BGMREC_MAX_K": "25", "BGMREC_ACCESS_LOG": "false"})
    assert (settings.max_k, settings.access_log) == (25, False)
    with pytest.raises(ConfigError, match="BGMREC_REGISTRY_POLL_S"):
        Config().serving.with_env({"BGMREC_REGISTRY_POLL_S": "-1"})


@pytest.mark.slow
@pytest.mark.integration
def test_bgmrec_train_and_the_kfp_component_resolve_identical_parameters(tiny_dataset, tmp_path):
    """The same params.yaml trains the same models on the DVC path (`bgmrec train`) and the KFP path."""
    from kfp import dsl

    from bgmrec.cli import app
    from components.train_model.component import train_model

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for block in params["models"].values():
        block.update(epochs=1, patience=1)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    config = load_config(path)
    for name in config.models:
        cli_out = tmp_path / "cli" / name
        result = CliRunner().invoke(app, ["train", "--dataset", str(tiny_dataset), "--model", name,
                                          "--out", str(cli_out), "--params", str(path)])
        assert result.exit_code == 0, result.output
        model = dsl.Model(name=name, uri=str(tmp_path / "kfp" / name))
        train_model.python_func(str(tiny_dataset), name, "weak", "", str(path), model)
        by_cli = json.loads((cli_out / "train.json").read_text())
        by_kfp = json.loads((Path(model.path) / "train.json").read_text())
        assert by_cli["params"] == by_kfp["params"] == config.model_params(name)
        assert by_cli["seed"] == by_kfp["seed"] == config.data.seed
        assert by_cli["params"]["batch_size"] == params["train"]["overrides"]["batch_size"]
