"""The music catalog served by the recommender: ids, titles and L2-normalised embeddings of every music clip.

Below `catalog.index_min_size` music (200k) retrieval is exact: a float32 matrix product of the query embedding
with the whole catalog (cosine, both sides unit-norm) and `np.argpartition` for the top K. From there on exact
search is too slow (it reads the whole matrix per query: 2 GB and ~170 ms at 1M x 512 on one core), so the
catalog is searched through a faiss IVF-SQ8 index (`with_index`, bgmrec.vector_index). The index only proposes
candidates: a pool of max(5·k, 100) plus the excluded music, which the catalog re-scores exactly with its float32
embeddings before the options below, so scores are exact cosines and the codes' approximation never reaches a
ranking.

Options on top of the relevance score s(v, m) = cos(v, m) (VMCML eq. 7's ranking):
- exclusions: listed music ids never appear;
- popularity debiasing: s'(v, m) = s(v, m) - beta * log(1 + pop_m) / log(1 + max pop), a penalty in [0, beta]
  that counters the head-heavy exposure both papers motivate their IPS evaluation with (CMVAE eq. 15);
- MMR re-ranking (Carbonell & Goldstein, 1998): greedily pick argmax_m lambda * s'(v, m) - (1 - lambda) *
  max_{j picked} cos(m, j) from a candidate pool; lambda = 1 is plain relevance ranking.

A catalog is immutable: `add` returns a new catalog, so a server swaps its reference atomically and requests in
flight finish on the catalog they started with. The index is never modified once a catalog holds it: `add`
shares it with the old catalog and scores the new music (the rows past the index) exactly on every query;
`with_index` and `save` make a grown copy, so the old catalog's searches never see rows it does not have.

Persistence (bgmrec.catalog_storage): `save(path)` writes the catalog as one base (with its index) named by the
manifest at `path`; a batch of new music is appended as a segment (`append_batch`, bgmrec.catalog_segments), at
a cost that follows the batch; `load_catalog` reads one consistent version, adds the segments' rows to the base's
index in memory, and searches exactly, with a warning naming the problem, when the index does not belong to the
catalog.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import InitVar, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bgmrec.catalog_segments import append_batch
from bgmrec.catalog_storage import (
    CATALOG_FILE,
    CatalogError,
    allocate_matrix,
    catalog_files,
    copy_catalog,
    index_files,
    read_catalog,
    read_music_ids,
    require_catalog,
    stored_version,
    write_catalog,
)
from bgmrec.config import CatalogSettings
from bgmrec.data.contract import MusicVectors
from bgmrec.models.base import EmbeddingRecommender, l2_normalise
from bgmrec.vector_index import VectorIndex, build_vector_index

__all__ = [
    "CATALOG_FILE", "CatalogError", "MusicCatalog", "Recommendations", "VectorIndex", "append_batch",
    "build_catalog", "build_vector_index", "catalog_files", "copy_catalog", "index_files", "load_catalog",
    "read_music_ids", "require_catalog", "stored_version",
]

MMR_POOL_FACTOR = 5
MMR_MIN_POOL = 50
# Candidates fetched from the index per query: max(MMR_POOL_FACTOR·k, INDEX_MIN_POOL) plus the excluded music
# found in the catalog, so exclusions and MMR (pool max(5·k, 50)) still have enough left to rank.
INDEX_MIN_POOL = 100


@dataclass(frozen=True)
class Recommendations:
    """One ranked list: catalog row indices and their cosine relevance scores, best first."""

    index: np.ndarray
    scores: np.ndarray


@dataclass(frozen=True)
class MusicCatalog:
    """Music ids, titles, unit-norm embeddings (float32, one row per clip), popularity and new-music flags.

    `normalised=True` says the embeddings are already unit-norm and finite (read back from files whose checksum
    was verified, or rows of another catalog): they are taken as they are, not copied and normalised again.
    """

    ids: np.ndarray
    titles: np.ndarray
    embeddings: np.ndarray
    popularity: np.ndarray
    is_new: np.ndarray
    version: int = 0
    # Searched through this index when set (rows past index.rows: music added since, scored exactly).
    index: VectorIndex | None = field(default=None, repr=False, compare=False)
    # The registry version of the model whose music encoder made the embeddings ("" when unknown).
    model_version: str = ""
    normalised: InitVar[bool] = False
    _id_index: pd.Index = field(init=False, repr=False, compare=False)
    _popularity_penalty: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self, normalised: bool) -> None:
        n = len(self.ids)
        emb = np.ascontiguousarray(self.embeddings, dtype=np.float32)
        if emb.ndim != 2 or len(emb) != n:
            raise CatalogError(f"catalog: embeddings have shape {emb.shape}, expected ({n}, dim)")
        for name in ("titles", "popularity", "is_new"):
            if len(getattr(self, name)) != n:
                raise CatalogError(f"catalog: {name} has {len(getattr(self, name))} rows, expected {n}")
        if not normalised:
            if not np.isfinite(emb).all():
                bad = int(np.flatnonzero(~np.isfinite(emb).all(axis=1))[0])
                raise CatalogError(f"catalog: music {self.ids[bad]}: embedding contains NaN or infinite values")
            emb = l2_normalise(emb).astype(np.float32, copy=False)
        index = pd.Index(np.asarray(self.ids, dtype=object))
        if not index.is_unique:
            dup = index[index.duplicated()][0]
            raise CatalogError(f"catalog: music id {dup} appears more than once")
        if self.index is not None and (self.index.rows > n or int(self.index.faiss_index.d) != emb.shape[1]):
            raise CatalogError(f"catalog: the vector index holds {self.index.rows} rows of "
                               f"{self.index.faiss_index.d} dims, the catalog {n} rows of {emb.shape[1]}")
        popularity = np.asarray(self.popularity, dtype=np.float64)
        top = np.log1p(popularity.max()) if n and popularity.max() > 0 else 1.0
        object.__setattr__(self, "embeddings", emb)
        object.__setattr__(self, "ids", np.asarray(self.ids, dtype=object))
        object.__setattr__(self, "titles", np.asarray(self.titles, dtype=object))
        object.__setattr__(self, "popularity", popularity)
        object.__setattr__(self, "is_new", np.asarray(self.is_new, dtype=bool))
        object.__setattr__(self, "_id_index", index)
        object.__setattr__(self, "_popularity_penalty", (np.log1p(popularity) / top).astype(np.float32))

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def indices_of(self, music_ids: Iterable[str]) -> np.ndarray:
        """Catalog rows of these ids; -1 where an id is not in the catalog."""
        ids = list(music_ids)
        if not ids:
            return np.zeros(0, dtype=np.int64)
        return self._id_index.get_indexer(pd.Index(ids, dtype=object)).astype(np.int64)

    def add(
        self,
        music_ids: Sequence[str],
        embeddings: np.ndarray,
        titles: Sequence[str | None] | None = None,
        popularity: np.ndarray | None = None,
        is_new: np.ndarray | None = None,
    ) -> MusicCatalog:
        """A new catalog with these music appended (new music by default); rejects ids already present.

        It shares this catalog's index, unchanged, and scores the new rows exactly on every query (copying a 1M
        index to grow it costs seconds and doubles its memory). Only the new rows are normalised.
        """
        ids = np.asarray(list(music_ids), dtype=object)
        emb = np.asarray(embeddings, dtype=np.float32)
        if emb.ndim != 2 or len(emb) != len(ids) or (len(ids) and emb.shape[1] != self.dim):
            raise CatalogError(
                f"catalog add: embeddings have shape {emb.shape}, expected ({len(ids)}, {self.dim})"
            )
        present = self.indices_of(ids) >= 0
        if present.any():
            raise CatalogError(f"catalog add: music id {ids[np.flatnonzero(present)[0]]} is already in the catalog")
        if not np.isfinite(emb).all():
            bad = int(np.flatnonzero(~np.isfinite(emb).all(axis=1))[0])
            raise CatalogError(f"catalog add: music {ids[bad]}: embedding contains NaN or infinite values")
        n = len(ids)
        titles_arr = np.asarray(list(titles) if titles is not None else ids, dtype=object)
        # In huge pages: first touching 2 GB of fresh 4 KB pages took 11-15 s on the 2-core VM, 4 s so.
        grown = allocate_matrix(len(self) + n, self.dim)
        grown[:len(self)] = self.embeddings
        grown[len(self):] = l2_normalise(emb)
        return MusicCatalog(
            ids=np.concatenate([self.ids, ids]),
            titles=np.concatenate([self.titles, np.where(pd.isna(titles_arr), ids, titles_arr)]),
            embeddings=grown,
            popularity=np.concatenate([self.popularity, np.zeros(n) if popularity is None else popularity]),
            is_new=np.concatenate([self.is_new, np.ones(n, bool) if is_new is None else is_new]),
            version=self.version + 1,
            index=self.index,
            model_version=self.model_version,
            normalised=True,
        )

    def with_index(self, settings: CatalogSettings | None = None) -> MusicCatalog:
        """This catalog searched through a vector index over every row when it has at least
        `settings.index_min_size` music (default `CatalogSettings()`), else searched exactly (no index).

        No index yet: one is built (minutes at 1M on 2 cores). An index over fewer rows (music added since): a
        grown copy (the old catalog keeps the original). The settings' search parameters apply either way.
        """
        settings = settings or CatalogSettings()
        if len(self) < settings.index_min_size:
            return self if self.index is None else self._with(index=None)
        if self.index is None:
            index = build_vector_index(self.embeddings, settings)
        elif self.index.rows < len(self):
            index = self.index.grown(self.embeddings[self.index.rows:])
        else:
            index = self.index
        if index.nprobe != settings.nprobe:
            index = VectorIndex(index.faiss_index, settings.nprobe, index.path)
        return self if index is self.index else self._with(index=index)

    def _with(self, **changes: Any) -> MusicCatalog:
        """A shallow copy with some fields changed, without re-checking 2 GB of embeddings."""
        clone = copy.copy(self)
        for name, value in changes.items():
            object.__setattr__(clone, name, value)
        return clone

    def top_k(
        self,
        query: np.ndarray,
        k: int,
        exclude: Iterable[str] = (),
        mmr_lambda: float = 1.0,
        popularity_debias: float = 0.0,
    ) -> Recommendations:
        """The top-k music for one unit-norm query embedding, with exclusions, debiasing and MMR (module doc).

        With an index, the candidates are the index's pool for this query plus the music added since the index
        was built, re-scored exactly.
        """
        _check_options(mmr_lambda, popularity_debias)
        query = np.asarray(query, dtype=np.float32).reshape(-1)
        exclude = list(exclude)
        if self.index is None:
            return self._rank(None, self.embeddings @ query, k, exclude, mmr_lambda, popularity_debias)
        rows = self.index.search(query[None, :], self._pool(k, exclude))[0]
        rows = rows[rows >= 0]
        if self.index.rows < len(self):
            rows = np.concatenate([rows, np.arange(self.index.rows, len(self))])
        return self._rank(rows, self.embeddings[rows] @ query, k, exclude, mmr_lambda, popularity_debias)

    def top_k_many(
        self,
        queries: np.ndarray,
        k: Sequence[int],
        exclude: Sequence[Iterable[str]],
        mmr_lambda: Sequence[float],
        popularity_debias: Sequence[float],
    ) -> list[Recommendations | Exception]:
        """`top_k` for each row of `queries` with that row's options; a row that fails (a CatalogError for invalid
        options) gets its exception in its place, so it fails alone. Each row's list equals its `top_k`.

        Several queries share the work: without an index one matrix product Q @ E^T scores them all (it is
        memory-bound: 32 queries x 3k music take 1.2 ms instead of 3.3 ms on one core); with one, a single
        batched index search proposes every query's candidates (one per distinct pool size, see `_pool`).
        """
        queries = np.asarray(queries, dtype=np.float32).reshape(len(queries), -1)
        exclude = [list(e) for e in exclude]
        if len(queries) == 1:
            scored = None  # one query: top_k's matrix-vector product is the faster kernel
        elif self.index is None:
            scored = [(None, row) for row in queries @ self.embeddings.T]
        else:
            pools = [self._pool(k[row], exclude[row]) for row in range(len(queries))]
            candidates = self._index_candidates(queries, pools)
            scored = [(rows, self.embeddings[rows] @ query) for rows, query in zip(candidates, queries, strict=True)]
        out: list[Recommendations | Exception] = []
        for row, query in enumerate(queries):
            try:
                if scored is None:
                    out.append(self.top_k(query, k[row], exclude[row], mmr_lambda[row], popularity_debias[row]))
                else:
                    _check_options(mmr_lambda[row], popularity_debias[row])
                    out.append(self._rank(*scored[row], k[row], exclude[row], mmr_lambda[row], popularity_debias[row]))
            except Exception as exc:  # noqa: BLE001 - handed back in the row's place
                out.append(exc)
        return out

    def _pool(self, k: int, exclude: list[str]) -> int:
        """How many candidates a query asks the index for: enough for exclusions and the MMR pool."""
        excluded = int((self.indices_of(exclude) >= 0).sum()) if exclude else 0
        return max(MMR_POOL_FACTOR * int(k), INDEX_MIN_POOL) + excluded

    def _index_candidates(self, queries: np.ndarray, pools: Sequence[int]) -> list[np.ndarray]:
        """Candidate rows of each query: its pool from the index and every row added since the index was built.
        Queries with the same pool are searched in one batched call (usually all of them)."""
        tail = np.arange(self.index.rows, len(self), dtype=np.int64)
        found: list[np.ndarray] = [tail] * len(queries)
        pools = np.asarray(pools)
        for pool in np.unique(pools):
            members = np.flatnonzero(pools == pool)
            for member, rows in zip(members, self.index.search(queries[members], int(pool)), strict=True):
                rows = rows[rows >= 0].astype(np.int64)
                found[member] = np.concatenate([rows, tail]) if len(tail) else rows
        return found

    def _rank(
        self,
        rows: np.ndarray | None,
        cosine: np.ndarray,
        k: int,
        exclude: Iterable[str],
        mmr_lambda: float,
        popularity_debias: float,
    ) -> Recommendations:
        """Rank scored candidates: catalog `rows` (None = every row, in order) with their `cosine` to the query."""
        ranking = cosine
        if popularity_debias:
            penalty = self._popularity_penalty if rows is None else self._popularity_penalty[rows]
            ranking = cosine - np.float32(popularity_debias) * penalty
        available = len(ranking)
        excluded = self.indices_of(exclude)
        excluded = np.unique(excluded[excluded >= 0])
        if len(excluded):
            ranking = ranking.copy() if ranking is cosine else ranking
            ranking[excluded if rows is None else np.isin(rows, excluded)] = -np.inf
            available = int(np.isfinite(ranking).sum())
        k = min(int(k), available)
        if k <= 0:
            return Recommendations(np.zeros(0, np.int64), np.zeros(0, np.float32))
        pool = k if mmr_lambda >= 1.0 else min(available, max(MMR_POOL_FACTOR * k, MMR_MIN_POOL))
        best = np.argpartition(-ranking, pool - 1)[:pool] if pool < len(ranking) else np.arange(len(ranking))
        best = best[np.argsort(-ranking[best], kind="stable")][:pool]
        if mmr_lambda >= 1.0:
            chosen = best[:k]
        else:
            chosen = best[self._mmr(best if rows is None else rows[best], ranking[best], k, mmr_lambda)]
        return Recommendations((chosen if rows is None else rows[chosen]).astype(np.int64), cosine[chosen])

    def _mmr(self, candidates: np.ndarray, relevance: np.ndarray, k: int, lam: float) -> np.ndarray:
        """Greedy maximal marginal relevance over a candidate pool sorted by relevance; positions in the pool."""
        emb = self.embeddings[candidates]
        similarity = emb @ emb.T
        picked = [0]
        max_similarity = similarity[0].copy()
        available = np.ones(len(candidates), bool)
        available[0] = False
        for _ in range(1, k):
            gain = lam * relevance - (1.0 - lam) * max_similarity
            gain[~available] = -np.inf
            best = int(np.argmax(gain))
            picked.append(best)
            available[best] = False
            np.maximum(max_similarity, similarity[best], out=max_similarity)
        return np.asarray(picked)

    def save(self, path: str | Path) -> Path:
        """Write the catalog as one new base part named by the manifest at `path` (bgmrec.catalog_storage): ids,
        titles, popularity and flags, the unit-norm embeddings, and, when it has an index, the index over every
        row (grown first if music was added since). The previous version's parts are removed once the manifest
        names the new one; a reader in between reads the new version. Writers hold the catalog's lock
        (bgmrec.ledger.catalog_transaction)."""
        index = self.index
        if index is not None and index.rows < len(self):
            index = index.grown(self.embeddings[index.rows:])
        return write_catalog(Path(path), self.ids, self.titles, self.embeddings, self.popularity, self.is_new,
                             self.version, self.model_version, index)


def load_catalog(path: str | Path, settings: CatalogSettings | None = None) -> MusicCatalog:
    """Read a catalog written by `MusicCatalog.save` (and grown by `append_batch`): its manifest file, or the
    folder that holds catalog.parquet. A CatalogError names the file if it is missing or damaged.

    A catalog of at least `settings.index_min_size` music (default `CatalogSettings()`) is searched through its
    base's saved index, read into memory, the segments' rows added to it. An index that does not belong to the
    catalog (other size, or vectors its sampled rows are not found by), or a missing one, is not used: a warning
    names the problem and the catalog is searched exactly (correct, but ~170 ms a query at 1M music).
    """
    stored = read_catalog(path, settings or CatalogSettings())
    return MusicCatalog(stored.ids, stored.titles, stored.embeddings, stored.popularity, stored.is_new,
                        version=stored.version, index=stored.index, model_version=stored.model_version,
                        normalised=True)


def build_catalog(
    model: EmbeddingRecommender,
    music_vectors: MusicVectors,
    titles: Sequence[str | None] | None = None,
    popularity: np.ndarray | None = None,
    is_new: np.ndarray | None = None,
    model_version: str = "",
) -> MusicCatalog:
    """Embed every music with the model's music encoder and hold the result as a catalog."""
    embeddings = model.embed_music(music_vectors.audio_embedding, music_vectors.audio_lld, music_vectors.ids)
    ids = np.asarray(music_vectors.ids, dtype=object)
    titles_arr = np.asarray(list(titles) if titles is not None else ids, dtype=object)
    return MusicCatalog(
        ids=ids,
        titles=np.where(pd.isna(titles_arr), ids, titles_arr),
        embeddings=embeddings,
        popularity=np.zeros(len(ids)) if popularity is None else np.asarray(popularity, dtype=np.float64),
        is_new=np.zeros(len(ids), bool) if is_new is None else np.asarray(is_new, dtype=bool),
        model_version=model_version,
    )


def _check_options(mmr_lambda: float, popularity_debias: float) -> None:
    if not 0.0 <= mmr_lambda <= 1.0:
        raise CatalogError(f"mmr_lambda={mmr_lambda} is out of range: it must be between 0 and 1")
    if popularity_debias < 0:
        raise CatalogError(f"popularity_debias={popularity_debias} is out of range: it must be >= 0")
