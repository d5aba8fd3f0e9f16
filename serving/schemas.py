"""The recommender's request and answer types: pydantic models BentoML turns into its OpenAPI schema (/docs.json)
and validates every request with, before any work is done.

Validation is strict (no string or boolean passes as a number), every string and list is capped, and vectors are
finite and bounded (|x| <= MAX_ABS_VALUE, so no float32 dot product with a unit-norm embedding can overflow).
Vector lengths are checked against the served model's input widths (`ServedLimits`), which the service sets
whenever it swaps a model in: a request with a wrong length is a 400 naming the field, and since BentoML validates
each request before adaptive batching joins it to others, a bad request never fails a batch.
"""

from __future__ import annotations

import math
import threading
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

# The widths of the media extractors' vectors (EfficientNet-Lite0 pooled features, multilingual USE): the inputs
# of a model trained on `bgmrec extract` features, used for the schema's example.
EXAMPLE_VISUAL_WIDTH = 1280
EXAMPLE_TEXT_WIDTH = 512
MAX_VECTOR_LENGTH = 8192
MAX_ABS_VALUE = 1e6
MAX_EXCLUDE = 1000
MAX_ID_CHARS = 256
MAX_DESCRIPTION_CHARS = 5000
MAX_DEBIAS = 100.0
MAX_QUERIES = 64

MusicId = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_CHARS)]
# BentoML declares its document OpenAPI 3.0, where `{"type": "null"}` (pydantic's JSON Schema for None) does not
# exist: 3.0 readers drop it and take the field as never null. `nullable` is 3.0's word for it.
NULLABLE = {"nullable": True}


class ServedLimits:
    """What request validation needs to know about the server: the input widths of the model being served
    (visual, text) and the largest k. Set by the service when it starts and whenever it swaps a model in."""

    _lock = threading.Lock()
    widths: dict[str, int] = {}
    max_k: int = 1000

    @classmethod
    def set(cls, widths: dict[str, int], max_k: int) -> None:
        with cls._lock:
            cls.widths = {"visual": int(widths["visual"]), "text": int(widths["text"])}
            cls.max_k = int(max_k)


def check_k(k: int) -> int:
    if k > ServedLimits.max_k:
        raise ValueError(f"k={k} is out of range: it must be between 1 and {ServedLimits.max_k}")
    return k


def check_vector(name: str, values: list[float] | None) -> list[float] | None:
    """A vector that is finite, bounded and as long as the served model expects (ValueError naming it)."""
    if values is None:
        return None
    for i, value in enumerate(values):
        if not math.isfinite(value):
            raise ValueError(f"{name}[{i}] is {value}: values must be finite numbers")
        if abs(value) > MAX_ABS_VALUE:
            raise ValueError(f"{name}[{i}] is {value:g}: values must be within ±{MAX_ABS_VALUE:g}")
    expected = ServedLimits.widths.get(name)
    if expected is not None and len(values) != expected:
        raise ValueError(f"{name} has {len(values)} values, expected {expected}")
    return values


class RankingOptions(BaseModel):
    """How many music and how they are ranked (bgmrec.catalog: exclusions, popularity debiasing, MMR)."""

    model_config = ConfigDict(strict=True, extra="forbid")

    k: int = Field(10, ge=1, le=1000, description="how many music to return (the server caps it, `serving.max_k`)")
    exclude: list[MusicId] = Field(default_factory=list, max_length=MAX_EXCLUDE,
                                   description="music ids never returned")
    mmr_lambda: float = Field(1.0, ge=0.0, le=1.0, allow_inf_nan=False,
                              description="maximal marginal relevance: 1 = plain ranking, lower = more diverse")
    popularity_debias: float = Field(0.0, ge=0.0, le=MAX_DEBIAS, allow_inf_nan=False,
                                     description="β in cos − β·log(1+pop)/log(1+max pop)")

    @field_validator("k")
    @classmethod
    def _k(cls, k: int) -> int:
        return check_k(k)


class FeaturesQuery(RankingOptions):
    """A video given by its feature vectors: visual, and text unless the video has no description (null)."""

    visual: list[float] = Field(min_length=1, max_length=MAX_VECTOR_LENGTH)
    text: list[float] | None = Field(None, min_length=1, max_length=MAX_VECTOR_LENGTH, json_schema_extra=NULLABLE)

    model_config = ConfigDict(
        strict=True, extra="forbid",
        json_schema_extra={"example": {"visual": [0.0] * EXAMPLE_VISUAL_WIDTH, "text": [0.0] * EXAMPLE_TEXT_WIDTH,
                                        "k": 10, "exclude": [], "mmr_lambda": 1.0, "popularity_debias": 0.0}},
    )

    @field_validator("visual")
    @classmethod
    def _visual(cls, values: list[float]) -> list[float]:
        return check_vector("visual", values)

    @field_validator("text")
    @classmethod
    def _text(cls, values: list[float] | None) -> list[float] | None:
        return check_vector("text", values)


class RecommendedMusic(BaseModel):
    music_id: str
    title: str
    score: float = Field(description="cosine of the video and music embeddings")


class RecommendationList(BaseModel):
    items: list[RecommendedMusic]
    k: int
    catalog_version: int
    model_version: str


class CatalogItem(BaseModel):
    music_id: str
    title: str
    is_new: bool


class CatalogPage(BaseModel):
    size: int
    version: int
    dim: int
    new_music: int
    model_version: str
    items: list[CatalogItem]


class NewMusic(BaseModel):
    """A music clip to add, as its audio feature vectors (embedded by the production music encoder)."""

    model_config = ConfigDict(strict=True, extra="forbid")

    music_id: MusicId
    title: Annotated[str, StringConstraints(max_length=MAX_ID_CHARS)] | None = Field(None, json_schema_extra=NULLABLE)
    audio_embedding: list[float] = Field(min_length=1, max_length=MAX_VECTOR_LENGTH)
    audio_lld: list[float] = Field(min_length=1, max_length=MAX_VECTOR_LENGTH)
    popularity: float = Field(0.0, ge=0.0, le=1e9, allow_inf_nan=False)

    @field_validator("audio_embedding", "audio_lld")
    @classmethod
    def _finite(cls, values: list[float], info: Any) -> list[float]:
        return check_vector(info.field_name, values)


class ErrorBody(BaseModel):
    """The body of every 4xx answer (serving/guard.py): the error schema BentoML declares in /docs.json for its
    error responses (an object whose `error` string is required; its optional `detail` is never sent)."""

    model_config = ConfigDict(extra="forbid")

    error: str = Field(description="what was wrong with the request, naming the field or item")


class RefreshResult(BaseModel):
    size: int
    version: int
    added: int | None = Field(json_schema_extra={**NULLABLE, "description": "music added; null for a reload"})
    model_version: str
