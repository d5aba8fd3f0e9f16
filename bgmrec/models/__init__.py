"""Model registry: every model the benchmark, the pipeline and serving can name.

A registry entry maps a name to a Recommender class and parameter overrides, so ablations are names too
(e.g. `cmvae-gen-dual`). Classes are imported lazily: naming a model imports only its module.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch

from bgmrec.models.base import Recommender, TorchRecommender

_REGISTRY: dict[str, tuple[str, dict[str, Any]]] = {
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


def register(name: str, target: str, **overrides: Any) -> None:
    """Register `name` as the class at `target` ("module:Class") with parameter overrides."""
    _REGISTRY[name] = (target, overrides)


def available_models() -> list[str]:
    return sorted(_REGISTRY)


def _resolve(target: str) -> type[Recommender]:
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)


def create_model(name: str, params: dict[str, Any] | None = None) -> Recommender:
    """A new, untrained model by registry name; params override the entry's and the class's defaults."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model '{name}'; available: {', '.join(available_models())}")
    target, overrides = _REGISTRY[name]
    model = _resolve(target)({**overrides, **(params or {})})
    model.name = name
    return model


def resolve_params(
    name: str, models_config: dict[str, Any] | None = None, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Parameters of a model named in a `models:` config: its family's block (`cmvae` for `cmvae-gen-dual`),
    then the registry entry's overrides (what makes an ablation an ablation, so a family block cannot undo it),
    then the name's own block, then `extra`."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model '{name}'; available: {', '.join(available_models())}")
    config = models_config or {}
    family = name.split("-")[0]
    params: dict[str, Any] = dict(config.get(family) or {}) if family != name else {}
    params.update(_REGISTRY[name][1])
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
register("cmvae", "bgmrec.models.cmvae:CMVAE")
register("cmvae-gen-none", "bgmrec.models.cmvae:CMVAE", generation="none")
register("cmvae-gen-dual", "bgmrec.models.cmvae:CMVAE", generation="dual")
register("cmvae-fusion-moe", "bgmrec.models.cmvae:CMVAE", fusion="moe")
register("cmvae-fusion-concat", "bgmrec.models.cmvae:CMVAE", fusion="concat")

# The other baselines of CMVAE Table 2: two-branch metric learning and variational matching
register("cbvmr", "bgmrec.models.two_branch:CBVMR")
register("cmvbr", "bgmrec.models.two_branch:CBVMR")  # the name CMVAE Table 2 prints for CBVMR
register("dscmr", "bgmrec.models.two_branch:DSCMR")
register("uwml", "bgmrec.models.two_branch:UWML")
register("dual-vae", "bgmrec.models.vae_baselines:DualVAE")
register("da-vae", "bgmrec.models.vae_baselines:DAVAE")
register("cross-vae", "bgmrec.models.vae_baselines:CrossVAE")
