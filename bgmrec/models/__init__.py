"""The model table: every model the benchmark, the pipeline and serving can name.

An entry maps a name to a Recommender class and parameter overrides, so ablations are names too
(e.g. `cmvae-gen-dual`). Classes are imported lazily: naming a model imports only its module.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch

from bgmrec.models.base import Recommender, TorchRecommender

_MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "random": ("bgmrec.models.baselines:RandomRecommender", {}),
    "popular": ("bgmrec.models.baselines:PopularRank", {}),
    "cca": ("bgmrec.models.baselines:CCARecommender", {}),
    "oracle": ("bgmrec.models.baselines:LatentOracle", {}),
    "vmcml": ("bgmrec.models.vmcml:VMCMLRecommender", {}),
    "vmcml-nosl": ("bgmrec.models.vmcml:VMCMLRecommender", {"beta": 0.0}),
    "vmcml-nolld": ("bgmrec.models.vmcml:VMCMLRecommender", {"use_lld": False}),
    "vmcml-arcface": ("bgmrec.models.vmcml:VMCMLRecommender", {"lifting_loss": "arcface"}),
    "cevar": ("bgmrec.models.vmcml:CEVARRecommender", {}),
}


def add_model(name: str, target: str, **overrides: Any) -> None:
    """Add `name` to the model table: the class at `target` ("module:Class") with these parameter overrides."""
    _MODELS[name] = (target, overrides)


def available_models() -> list[str]:
    return sorted(_MODELS)


def _resolve(target: str) -> type[Recommender]:
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)


def create_model(name: str, params: dict[str, Any] | None = None) -> Recommender:
    """A new, untrained model by its name in the model table; params override the entry's and the class's defaults."""
    if name not in _MODELS:
        raise ValueError(f"unknown model '{name}'; available: {', '.join(available_models())}")
    target, overrides = _MODELS[name]
    model = _resolve(target)({**overrides, **(params or {})})
    model.name = name
    return model


def resolve_params(
    name: str, models_config: dict[str, Any] | None = None, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Parameters of a model named in a `models:` config: its family's block (`cmvae` for `cmvae-gen-dual`),
    then the table entry's overrides (what makes an ablation an ablation, so a family block cannot undo it),
    then the name's own block, then `extra`."""
    if name not in _MODELS:
        raise ValueError(f"unknown model '{name}'; available: {', '.join(available_models())}")
    config = models_config or {}
    family = name.split("-")[0]
    params: dict[str, Any] = dict(config.get(family) or {}) if family != name else {}
    params.update(_MODELS[name][1])
    params.update(config.get(name) or {})
    params.update(extra or {})
    return params


def load_model(path: str | Path) -> TorchRecommender:
    """Reload a checkpoint written by `TorchRecommender.save` (same embeddings as when saved)."""
    checkpoint = torch.load(Path(path), map_location="cpu", weights_only=True)
    model = create_model(checkpoint["name"], checkpoint["params"])
    if not isinstance(model, TorchRecommender):
        raise ValueError(f"{path}: model '{checkpoint['name']}' has no checkpoint format")
    model.load_state(checkpoint)
    return model


# CMVAE and its paper ablations (Tables 3-4); `cmvae@notext` (Table 5) is a benchmark variant of `cmvae`
add_model("cmvae", "bgmrec.models.cmvae:CMVAE")
add_model("cmvae-gen-none", "bgmrec.models.cmvae:CMVAE", generation="none")
add_model("cmvae-gen-dual", "bgmrec.models.cmvae:CMVAE", generation="dual")
add_model("cmvae-fusion-moe", "bgmrec.models.cmvae:CMVAE", fusion="moe")
add_model("cmvae-fusion-concat", "bgmrec.models.cmvae:CMVAE", fusion="concat")

# The other baselines of CMVAE Table 2: two-branch metric learning and variational matching
add_model("cbvmr", "bgmrec.models.two_branch:CBVMR")
add_model("cmvbr", "bgmrec.models.two_branch:CBVMR")  # the name CMVAE Table 2 prints for CBVMR
add_model("dscmr", "bgmrec.models.two_branch:DSCMR")
add_model("uwml", "bgmrec.models.two_branch:UWML")
add_model("dual-vae", "bgmrec.models.vae_baselines:DualVAE")
add_model("da-vae", "bgmrec.models.vae_baselines:DAVAE")
add_model("cross-vae", "bgmrec.models.vae_baselines:CrossVAE")
