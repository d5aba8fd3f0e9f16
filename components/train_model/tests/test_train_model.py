from pathlib import Path

import pytest

from bgmrec.models import load_model
from bgmrec.registry import CHECKPOINT_FILE


@pytest.mark.integration
def test_trains_a_reloadable_checkpoint(tiny_cmvae, tiny_dataset):
    for split_kind, model in tiny_cmvae.items():
        assert model.metadata == {"model_name": "cmvae", "split": split_kind, "features_from": "files"}
        reloaded = load_model(Path(model.path) / CHECKPOINT_FILE)
        assert reloaded.name == "cmvae"
        assert (Path(model.path) / "train.json").exists()


@pytest.mark.unit
def test_unknown_model_is_refused(tiny_dataset, fast_params_path, artifact):
    from components.train_model.component import train_model

    with pytest.raises(ValueError, match="no-such-model"):
        train_model.python_func(str(tiny_dataset), "no-such-model", "weak", "", str(fast_params_path),
                                artifact("Model", "model"))
