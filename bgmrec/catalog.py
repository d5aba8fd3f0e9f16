"""The music catalog served by the recommender: ids, titles and L2-normalised embeddings of every music clip.

Retrieval is exact by default: a float32 matrix product of the query embedding with the whole catalog (cosine,
both sides unit-norm) and `np.argpartition` for the top K. Exact search reads the whole matrix per query (2 GB at
1M clips x 512 dims), too slow for 1M on 2 cores (bench/bench_serving.py, docs/benchmarks.md (issue 8)), so large
catalogs get a coarse inverted-file index (`with_index`): spherical k-means lists, rows regrouped so each list is
a contiguous slice, and a query scores only the n_probe lists closest to it plus music added since the index
was built. Its recall against exact search is measured in the benchmark.

Options on top of the relevance score s(v, m) = cos(v, m) (VMCML eq. 7's ranking):
- exclusions: listed music ids never appear;
- popularity debiasing: s'(v, m) = s(v, m) - beta * log(1 + pop_m) / log(1 + max pop), a penalty in [0, beta]
  that counters the head-heavy exposure both papers motivate their IPS evaluation with (CMVAE eq. 15);
- MMR re-ranking (Carbonell & Goldstein, 1998): greedily pick argmax_m lambda * s'(v, m) - (1 - lambda) *
  max_{j picked} cos(m, j) from a candidate pool; lambda = 1 is plain relevance ranking.

A catalog is immutable: `add` returns a new catalog, so a server swaps its reference atomically and requests in
flight finish on the catalog they started with.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from bgmrec.data.contract import MusicVectors
from bgmrec.models.base import EmbeddingRecommender, l2_normalise

CATALOG_FILE = "catalog.parquet"
MMR_POOL_FACTOR = 5
MMR_MIN_POOL = 50


class CatalogError(ValueError):
    """A catalog operation that cannot be done (duplicate ids, wrong embedding width, unknown file)."""


@dataclass(frozen=True)
class Recommendations:
    """One ranked list: catalog row indices and their cosine relevance scores, best first."""

    index: np.ndarray
    scores: np.ndarray


@dataclass(frozen=True)
class CoarseIndex:
    """An inverted-file index: rows [offsets[l], offsets[l+1]) of the catalog belong to list l, for rows below
    `n_indexed`; rows from `n_indexed` on (music added since the index was built) are always scanned exactly."""

    centroids: np.ndarray
    offsets: np.ndarray
    n_indexed: int
    n_probe: int

    def candidate_slices(self, query: np.ndarray, n_total: int, n_probe: int | None = None) -> list[tuple[int, int]]:
        """Row ranges to score: the n_probe lists (default: the index's) whose centroids are closest to the query,
        plus the tail."""
        closeness = self.centroids @ query
        n_probe = max(1, min(n_probe or self.n_probe, len(closeness)))
        lists = np.argpartition(-closeness, n_probe - 1)[:n_probe]
        slices = [(int(self.offsets[i]), int(self.offsets[i + 1])) for i in np.sort(lists)]
        if n_total > self.n_indexed:
            slices.append((self.n_indexed, n_total))
        return [(a, b) for a, b in slices if b > a]


def spherical_kmeans(x: np.ndarray, n_lists: int, iterations: int = 8, per_list: int = 64,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Centroids (unit norm) of spherical k-means on a sample of `per_list` rows per list, and every row's nearest
    centroid."""
    rng = np.random.default_rng(seed)
    train = x[np.sort(rng.choice(len(x), min(len(x), per_list * n_lists), replace=False))]
    centroids = train[rng.choice(len(train), n_lists, replace=False)].copy()
    for _ in range(iterations):
        assign = np.argmax(train @ centroids.T, axis=1)
        sums = np.zeros_like(centroids)
        np.add.at(sums, assign, train)
        empty = np.linalg.norm(sums, axis=1) == 0
        sums[empty] = train[rng.choice(len(train), int(empty.sum()), replace=False)]
        centroids = l2_normalise(sums).astype(np.float32)
    labels = np.concatenate([np.argmax(x[i : i + 65536] @ centroids.T, axis=1) for i in range(0, len(x), 65536)])
    return centroids, labels


@dataclass(frozen=True)
class MusicCatalog:
    """Music ids, titles, unit-norm embeddings (float32, one row per clip), popularity and new-music flags."""

    ids: np.ndarray
    titles: np.ndarray
    embeddings: np.ndarray
    popularity: np.ndarray
    is_new: np.ndarray
    version: int = 0
    index: CoarseIndex | None = field(default=None, repr=False, compare=False)
    # The registry version of the model whose music encoder made the embeddings ("" when unknown).
    model_version: str = ""
    _id_index: pd.Index = field(init=False, repr=False, compare=False)
    _popularity_penalty: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = len(self.ids)
        emb = np.ascontiguousarray(self.embeddings, dtype=np.float32)
        if emb.ndim != 2 or len(emb) != n:
            raise CatalogError(f"catalog: embeddings have shape {emb.shape}, expected ({n}, dim)")
        for name in ("titles", "popularity", "is_new"):
            if len(getattr(self, name)) != n:
                raise CatalogError(f"catalog: {name} has {len(getattr(self, name))} rows, expected {n}")
        if not np.isfinite(emb).all():
            bad = int(np.flatnonzero(~np.isfinite(emb).all(axis=1))[0])
            raise CatalogError(f"catalog: music {self.ids[bad]}: embedding contains NaN or infinite values")
        index = pd.Index(np.asarray(self.ids, dtype=object))
        if not index.is_unique:
            dup = index[index.duplicated()][0]
            raise CatalogError(f"catalog: music id {dup} appears more than once")
        popularity = np.asarray(self.popularity, dtype=np.float64)
        top = np.log1p(popularity.max()) if n and popularity.max() > 0 else 1.0
        object.__setattr__(self, "embeddings", l2_normalise(emb).astype(np.float32, copy=False))
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
        """A new catalog with these music appended (new music by default); rejects ids already present."""
        ids = np.asarray(list(music_ids), dtype=object)
        emb = np.asarray(embeddings, dtype=np.float32)
        if emb.ndim != 2 or len(emb) != len(ids) or (len(ids) and emb.shape[1] != self.dim):
            raise CatalogError(
                f"catalog add: embeddings have shape {emb.shape}, expected ({len(ids)}, {self.dim})"
            )
        present = self.indices_of(ids) >= 0
        if present.any():
            raise CatalogError(f"catalog add: music id {ids[np.flatnonzero(present)[0]]} is already in the catalog")
        n = len(ids)
        titles_arr = np.asarray(list(titles) if titles is not None else ids, dtype=object)
        return MusicCatalog(
            ids=np.concatenate([self.ids, ids]),
            titles=np.concatenate([self.titles, np.where(pd.isna(titles_arr), ids, titles_arr)]),
            embeddings=np.concatenate([self.embeddings, emb]),
            popularity=np.concatenate([self.popularity, np.zeros(n) if popularity is None else popularity]),
            is_new=np.concatenate([self.is_new, np.ones(n, bool) if is_new is None else is_new]),
            version=self.version + 1,
            index=self.index,
            model_version=self.model_version,
        )

    def with_index(self, n_lists: int | None = None, n_probe: int | None = None, seed: int = 0) -> MusicCatalog:
        """The same catalog, rows regrouped by spherical k-means list, with a coarse index for large catalogs.

        Default n_lists = 2·sqrt(n) and n_probe = n_lists / 8: about 1/8 of the catalog is scored per query
        (recall@10 against exact 0.9-0.96 on 100k music in docs/benchmarks.md (issue 8)).
        Building costs one pass of n x n_lists x dim multiply-adds (plus k-means on a 64·n_lists sample).
        """
        n = len(self)
        n_lists = int(n_lists or max(1, round(2 * np.sqrt(n))))
        centroids, labels = spherical_kmeans(self.embeddings, n_lists, seed=seed)
        order = np.argsort(labels, kind="stable")
        offsets = np.concatenate([[0], np.cumsum(np.bincount(labels, minlength=n_lists))]).astype(np.int64)
        index = CoarseIndex(centroids, offsets, n, int(n_probe or max(1, n_lists // 8)))
        return MusicCatalog(self.ids[order], self.titles[order], self.embeddings[order], self.popularity[order],
                            self.is_new[order], self.version, index, self.model_version)

    def top_k(
        self,
        query: np.ndarray,
        k: int,
        exclude: Iterable[str] = (),
        mmr_lambda: float = 1.0,
        popularity_debias: float = 0.0,
        exact: bool = False,
        n_probe: int | None = None,
    ) -> Recommendations:
        """The top-k music for one unit-norm query embedding, with exclusions, debiasing and MMR (module doc).

        With a coarse index (and exact=False) only the probed lists (n_probe, default the index's) and music added
        since are scored.
        """
        _check_options(mmr_lambda, popularity_debias)
        query = np.asarray(query, dtype=np.float32).reshape(-1)
        if self.index is None or exact:
            return self._rank(None, self.embeddings @ query, k, exclude, mmr_lambda, popularity_debias)
        rows, cosine = self._score_probed_lists(query[None, :], n_probe)[0]
        return self._rank(rows, cosine, k, exclude, mmr_lambda, popularity_debias)

    def top_k_many(
        self,
        queries: np.ndarray,
        k: Sequence[int],
        exclude: Sequence[Iterable[str]],
        mmr_lambda: Sequence[float],
        popularity_debias: Sequence[float],
    ) -> list[Recommendations | Exception]:
        """`top_k` for each row of `queries` with that row's options; a row that fails (a CatalogError for invalid
        options) gets its exception in its place, so it fails alone.

        Several queries share the reads of the catalog matrix, which is what search costs (it is memory-bound):
        without an index one matrix product Q @ E^T scores them all (32 queries x 3k music: 1.2 ms instead of
        3.3 ms on one core); with one, each probed list is scored once against every query that probes it
        (`_score_probed_lists`).
        """
        queries = np.asarray(queries, dtype=np.float32).reshape(len(queries), -1)
        if len(queries) == 1:
            scored = None  # one query: top_k's matrix-vector product is the faster kernel
        elif self.index is None:
            scored = [(None, row) for row in queries @ self.embeddings.T]
        else:
            scored = self._score_probed_lists(queries)
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

    def _score_probed_lists(self, queries: np.ndarray, n_probe: int | None = None) -> list[tuple[np.ndarray,
                                                                                                  np.ndarray]]:
        """(rows, cosine) of each query over the lists it probes (and the music added since the index was built),
        reading each probed list once: one product of the list's rows with all the queries that probe it."""
        probes = [self.index.candidate_slices(query, len(self), n_probe) for query in queries]
        probers: dict[tuple[int, int], list[int]] = {}
        for row, slices in enumerate(probes):
            for piece in slices:
                probers.setdefault(piece, []).append(row)
        scores: list[dict[tuple[int, int], np.ndarray]] = [{} for _ in queries]
        for (a, b), rows in probers.items():
            block = self.embeddings[a:b] @ queries[rows].T
            for column, row in enumerate(rows):
                scores[row][(a, b)] = block[:, column]
        return [(np.concatenate([np.arange(a, b) for a, b in slices]),
                 np.concatenate([scores[row][piece] for piece in slices])) for row, slices in enumerate(probes)]

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
        penalty = self._popularity_penalty if rows is None else self._popularity_penalty[rows]
        ranking = cosine - np.float32(popularity_debias) * penalty if popularity_debias else cosine.copy()
        excluded = self.indices_of(exclude)
        excluded = np.unique(excluded[excluded >= 0])
        if len(excluded):
            ranking[excluded if rows is None else np.isin(rows, excluded)] = -np.inf
        available = int(np.isfinite(ranking).sum()) if len(excluded) else len(ranking)
        k = min(int(k), available)
        if k <= 0:
            return Recommendations(np.zeros(0, np.int64), np.zeros(0, np.float32))
        pool = k if mmr_lambda >= 1.0 else min(available, max(MMR_POOL_FACTOR * k, MMR_MIN_POOL))
        best = np.argpartition(-ranking, pool - 1)[:pool] if pool < len(ranking) else np.arange(len(ranking))
        best = best[np.argsort(-ranking[best], kind="stable")][:pool]
        candidates = best if rows is None else rows[best]
        if mmr_lambda >= 1.0:
            chosen = best[:k]
        else:
            chosen = best[self._mmr(candidates, ranking[best], k, mmr_lambda)]
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

    def to_table(self) -> pa.Table:
        dim = self.dim
        flat = pa.array(self.embeddings.reshape(-1), type=pa.float32())
        return pa.table(
            {
                "music_id": pa.array(self.ids.astype(str)),
                "title": pa.array(self.titles.astype(str)),
                "embedding": pa.FixedSizeListArray.from_arrays(flat, dim),
                "popularity": pa.array(self.popularity),
                "is_new": pa.array(self.is_new),
            }
        )

    def save(self, path: str | Path) -> Path:
        """Write the catalog as parquet (music_id, title, embedding list<float32>, popularity, is_new), atomically:
        a temp file of its own, then a rename, so a reader (every serving replica) never sees half a file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        table = self.to_table().replace_schema_metadata(
            {"bgmrec_catalog_version": str(self.version), "bgmrec_model_version": self.model_version}
        )
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            pq.write_table(table, tmp)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path


def load_catalog(path: str | Path) -> MusicCatalog:
    """Read a catalog written by `MusicCatalog.save`; a CatalogError names the file if it is missing or broken."""
    path = Path(path)
    if path.is_dir():
        path = path / CATALOG_FILE
    if not path.exists():
        raise CatalogError(f"{path}: no catalog file; run `bgmrec build-catalog` first")
    table = pq.read_table(path)
    missing = {"music_id", "title", "embedding", "popularity", "is_new"} - set(table.column_names)
    if missing:
        raise CatalogError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    column = table.column("embedding").combine_chunks()
    n = table.num_rows
    values = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    dim = column.type.list_size if pa.types.is_fixed_size_list(column.type) else (len(values) // n if n else 0)
    metadata = table.schema.metadata or {}
    return MusicCatalog(
        ids=table.column("music_id").to_numpy(zero_copy_only=False),
        titles=table.column("title").to_numpy(zero_copy_only=False),
        embeddings=values.reshape(n, dim),
        popularity=table.column("popularity").to_numpy(zero_copy_only=False),
        is_new=table.column("is_new").to_numpy(zero_copy_only=False),
        version=int(metadata.get(b"bgmrec_catalog_version", b"0")),
        model_version=metadata.get(b"bgmrec_model_version", b"").decode(),
    )


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
