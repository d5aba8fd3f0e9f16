"""The extractor table: each extractor is chosen by name in params and records its name, version and output length.

Kinds: `visual` (frames → one vector per video), `text` (descriptions → vectors), `audio_embedding` (16 kHz mono
signal → vector, the papers' pretrained audio network) and `audio_lld` (signal → raw openSMILE functionals; the
fitted standardise + PCA step in `bgmrec.media.audio` turns them into the catalog's `audio_lld`).
"""

from __future__ import annotations

import hashlib
import importlib
import json
from collections.abc import Callable
from typing import Any

from bgmrec.media.config import ExtractionConfig

KINDS = ("visual", "text", "audio_embedding", "audio_lld")
_MODULES = {
    "visual": "bgmrec.media.visual",
    "text": "bgmrec.media.text",
    "audio_embedding": "bgmrec.media.audio",
    "audio_lld": "bgmrec.media.audio",
}
_EXTRACTORS: dict[str, dict[str, Callable[[ExtractionConfig], Extractor]]] = {kind: {} for kind in KINDS}


class Extractor:
    """Base of every extractor: `name`, `version` and `dim` (the output length) describe what it produces."""

    kind: str = ""
    name: str = ""
    version: str = ""
    dim: int = 0

    def settings(self) -> dict[str, Any]:
        """Settings that change the output (frame rate, weights file, ...): part of the cache key."""
        return {}

    def signature(self) -> str:
        """A short stable key for the cache: name, version and settings hashed together."""
        blob = json.dumps({"name": self.name, "version": self.version, **self.settings()}, sort_keys=True)
        return f"{self.name}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "version": self.version,
            "dim": int(self.dim),
            "settings": self.settings(),
        }


def register_extractor(kind: str, name: str) -> Callable:
    """Class decorator: make an extractor available under `name` for `kind`."""
    if kind not in KINDS:
        raise ValueError(f"unknown extractor kind '{kind}', expected one of {KINDS}")

    def wrap(cls: type[Extractor]) -> type[Extractor]:
        cls.kind, cls.name = kind, name
        _EXTRACTORS[kind][name] = cls
        return cls

    return wrap


def _load_modules(kinds: tuple[str, ...] = KINDS) -> None:
    for kind in kinds:
        importlib.import_module(_MODULES[kind])


def available_extractors() -> dict[str, list[str]]:
    """Every registered extractor name, per kind."""
    _load_modules()
    return {kind: sorted(names) for kind, names in _EXTRACTORS.items()}


def create_extractor(kind: str, config: ExtractionConfig) -> Extractor:
    """The extractor named by `config.<kind>`, built with the config's weights paths and settings."""
    if kind not in KINDS:
        raise ValueError(f"unknown extractor kind '{kind}', expected one of {KINDS}")
    _load_modules((kind,))
    name = getattr(config, kind)
    if name not in _EXTRACTORS[kind]:
        raise ValueError(f"unknown {kind} extractor '{name}'; available: {sorted(_EXTRACTORS[kind])}")
    return _EXTRACTORS[kind][name](config)
