"""The music catalog served by the recommender: ids, titles and L2-normalised embeddings of every music clip.

Below `catalog.index_min_size` music (200k) retrieval is exact: a float32 matrix product of the query embedding
with the whole catalog (cosine, both sides unit-norm) and `np.argpartition` for the top K. From there on exact
search is too slow (it reads the whole matrix per query: 2 GB and ~170 ms at 1M x 512 on one core), so the
catalog is searched through a faiss IVF-SQ8 index (`with_index`: k-means lists of 8-bit codes, the `nprobe` lists
nearest the query scanned; parameters and the measurement that chose them in docs/decisions/vector-index.md).
The index only proposes candidates: a pool of max(5·k, 100) plus the excluded music, which the catalog re-scores
exactly with its float32 embeddings before the options below, so scores are exact cosines and the codes'
approximation never reaches a ranking.

Options on top of the relevance score s(v, m) = cos(v, m) (VMCML eq. 7's ranking):
- exclusions: listed music ids never appear;
- popularity debiasing: s'(v, m) = s(v, m) - beta * log(1 + pop_m) / log(1 + max pop), a penalty in [0, beta]
  that counters the head-heavy exposure both papers motivate their IPS evaluation with (CMVAE eq. 15);
- MMR re-ranking (Carbonell & Goldstein, 1998): greedily pick argmax_m lambda * s'(v, m) - (1 - lambda) *
  max_{j picked} cos(m, j) from a candidate pool; lambda = 1 is plain relevance ranking.

A catalog is immutable: `add` returns a new catalog, so a server swaps its reference atomically and requests in
flight finish on the catalog they started with. The index is never modified once built: `add` shares it with the
old catalog and scores the new music (the rows past the index) exactly on every query; `with_index` and `save`
make a grown copy, so the old catalog's searches never see rows it does not have.

Persistence: `save(path)` writes the parquet and, for an indexed catalog, the index beside it (`index_files`:
catalog.index, and catalog.index.json recording which catalog it indexes: rows, model version, a digest of the
ids). `load_catalog` reads that index when it matches the catalog and falls back to exact search, with a warning
naming the mismatch, when it does not: a stale or foreign index is never searched.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from bgmrec.config import CatalogSettings
from bgmrec.data.contract import MusicVectors
from bgmrec.models.base import EmbeddingRecommender, l2_normalise

logger = logging.getLogger("bgmrec.catalog")

CATALOG_FILE = "catalog.parquet"
# The index file is named after the catalog's parquet with this suffix (REGISTRY/catalog.index), its record of
# which catalog it indexes with ".json" after that (catalog.index.json).
INDEX_SUFFIX = ".index"
INDEX_FORMAT = 1
MMR_POOL_FACTOR = 5
MMR_MIN_POOL = 50
# Candidates fetched from the index per query: max(MMR_POOL_FACTOR·k, INDEX_MIN_POOL) plus the excluded music
# found in the catalog, so exclusions and MMR (pool max(5·k, 50)) still have enough left to rank.
INDEX_MIN_POOL = 100
# Rows searched by their own embeddings when an index is loaded (a last check that the file indexes this
# catalog's embeddings, whatever its record says).
INDEX_SPOT_CHECKS = 8


class CatalogError(ValueError):
    """A catalog operation that cannot be done (duplicate ids, wrong embedding width, unknown file)."""


@dataclass(frozen=True)
class Recommendations:
    """One ranked list: catalog row indices and their cosine relevance scores, best first."""

    index: np.ndarray
    scores: np.ndarray


def index_files(catalog_path: str | Path) -> tuple[Path, Path]:
    """The index file beside a catalog's parquet and the JSON record of which catalog it indexes."""
    index_path = Path(catalog_path).with_suffix(INDEX_SUFFIX)
    return index_path, index_path.with_name(index_path.name + ".json")


@dataclass(frozen=True)
class VectorIndex:
    """A faiss IVF-SQ8 index (inner product) over the first `rows` rows of a catalog, searched with `nprobe`.

    Never modified after it is built or loaded: catalogs share it (`MusicCatalog.add`), and faiss searches of
    one index from several threads are safe only while nobody adds to it.
    """

    faiss_index: Any
    nprobe: int
    # The file it was read from; None when it was built (or grown) in this process.
    path: Path | None = None

    @property
    def rows(self) -> int:
        return int(self.faiss_index.ntotal)

    def search(self, queries: np.ndarray, pool: int) -> np.ndarray:
        """The `pool` best rows (by the index's SQ8 scores over the `nprobe` lists nearest each query) of each
        query, one batched faiss call; -1 pads a row when the probed lists hold fewer."""
        import faiss

        params = faiss.SearchParametersIVF(nprobe=self.nprobe)
        _, rows = self.faiss_index.search(np.ascontiguousarray(queries, dtype=np.float32), min(pool, self.rows),
                                          params=params)
        return rows

    def grown(self, embeddings: np.ndarray) -> VectorIndex:
        """A copy with these rows added after the indexed ones (each to its nearest list); this index is left as
        it is."""
        import faiss

        bigger = faiss.clone_index(self.faiss_index)
        bigger.add(np.ascontiguousarray(embeddings, dtype=np.float32))
        return VectorIndex(bigger, self.nprobe)


def build_vector_index(embeddings: np.ndarray, settings: CatalogSettings) -> VectorIndex:
    """An IVF-SQ8 index over every row (faiss, inner product on the unit-norm rows), built with all cores:
    k-means lists trained on a sample, 8-bit codes per dimension."""
    import faiss

    n, dim = embeddings.shape
    lists = min(settings.ivf_lists or int(4 * np.sqrt(n)), n)  # k-means needs a row per list at least
    index = faiss.index_factory(dim, f"IVF{lists},SQ8", faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.extract_index_ivf(index)
    # k-means on 64 rows per list, 10 iterations: 2.5 minutes at 1M on 2 cores instead of most of an hour with
    # faiss's defaults (256 per list, 25 iterations), for the recall measured in docs/decisions/vector-index.md.
    ivf.cp.max_points_per_centroid, ivf.cp.niter = 64, 10
    sample = np.random.default_rng(0).choice(n, min(n, 64 * lists), replace=False)
    index.train(np.ascontiguousarray(embeddings[np.sort(sample)], dtype=np.float32))
    index.add(np.ascontiguousarray(embeddings, dtype=np.float32))
    return VectorIndex(index, settings.nprobe)


@dataclass(frozen=True)
class MusicCatalog:
    """Music ids, titles, unit-norm embeddings (float32, one row per clip), popularity and new-music flags."""

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
        if self.index is not None and (self.index.rows > n or int(self.index.faiss_index.d) != emb.shape[1]):
            raise CatalogError(f"catalog: the vector index holds {self.index.rows} rows of "
                               f"{self.index.faiss_index.d} dims, the catalog {n} rows of {emb.shape[1]}")
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
        """A new catalog with these music appended (new music by default); rejects ids already present.

        It shares this catalog's index, unchanged, and scores the new rows exactly on every query: copying a 1M
        index to add a batch to the copy costs seconds and doubles its memory while both catalogs live, scanning
        a batch of 1,000 costs ~0.05 ms a query (bench/bench_index.py). `save` persists a grown copy.
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

    def with_index(self, settings: CatalogSettings | None = None) -> MusicCatalog:
        """This catalog searched through a vector index over every row when it has at least
        `settings.index_min_size` music (default `CatalogSettings()`), else searched exactly (no index).

        No index yet: one is built (minutes at 1M on 2 cores). An index over fewer rows (music added since): a
        grown copy (the old catalog keeps the original). `settings.nprobe` applies either way.
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
        """A shallow copy with some fields changed, without re-checking and re-normalising 2 GB of embeddings."""
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
        if self.index is None:
            return self._rank(None, self.embeddings @ query, k, exclude, mmr_lambda, popularity_debias)
        exclude = list(exclude)
        rows = self._index_candidates(query[None, :], [self._pool(k, exclude)])[0]
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
        """Write the catalog as parquet (music_id, title, embedding list<float32>, popularity, is_new) and, when it
        has an index, the index over every row beside it (`index_files`; grown first if music was added since).

        Each file is written atomically (a temp file of its own, then a rename), the parquet last: replicas watch
        it, and whoever reads it finds the index of the same catalog beside it (a reader caught between two saves
        finds a mismatch and searches exactly, see `load_catalog`). Saving without an index removes an old one.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        index_path, record_path = index_files(path)
        index = self.index
        if index is not None and index.rows < len(self):
            index = index.grown(self.embeddings[index.rows:])
        if index is None:
            index_path.unlink(missing_ok=True)
            record_path.unlink(missing_ok=True)
        else:
            import faiss

            _write_atomically(index_path, lambda tmp: faiss.write_index(index.faiss_index, tmp))
            ivf = faiss.extract_index_ivf(index.faiss_index)
            record = {
                "format": INDEX_FORMAT,
                "rows": len(self),
                "dim": self.dim,
                "model_version": self.model_version,
                "catalog_version": self.version,
                "ids_sha256": _ids_digest(self.ids),
                "index_bytes": index_path.stat().st_size,
                "faiss": faiss.__version__,
                "faiss_type": type(faiss.downcast_index(index.faiss_index)).__name__,
                "ivf_lists": int(ivf.nlist),
            }
            _write_atomically(record_path, lambda tmp: Path(tmp).write_text(json.dumps(record, indent=2) + "\n"))
        table = self.to_table().replace_schema_metadata(
            {"bgmrec_catalog_version": str(self.version), "bgmrec_model_version": self.model_version}
        )
        _write_atomically(path, lambda tmp: pq.write_table(table, tmp))
        return path


def _write_atomically(path: Path, write: Any) -> None:
    """`write(temp_path)` into a temp file beside `path`, then rename it to `path`."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _ids_digest(ids: np.ndarray) -> str:
    return hashlib.sha256("\n".join(map(str, ids)).encode()).hexdigest()


def load_catalog(path: str | Path, settings: CatalogSettings | None = None) -> MusicCatalog:
    """Read a catalog written by `MusicCatalog.save`; a CatalogError names the file if it is missing or broken.

    A catalog of at least `settings.index_min_size` music (default `CatalogSettings()`) is searched through the
    index saved beside it, read into memory and searched with `settings.nprobe`. An index that does not belong
    to this catalog (other rows, model or ids, or vectors its sampled rows are not found by), or a missing one,
    is not used: a warning names the problem and the catalog is searched exactly (correct, but ~170 ms a query
    at 1M music).
    """
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
    catalog = MusicCatalog(
        ids=table.column("music_id").to_numpy(zero_copy_only=False),
        titles=table.column("title").to_numpy(zero_copy_only=False),
        embeddings=values.reshape(n, dim),
        popularity=table.column("popularity").to_numpy(zero_copy_only=False),
        is_new=table.column("is_new").to_numpy(zero_copy_only=False),
        version=int(metadata.get(b"bgmrec_catalog_version", b"0")),
        model_version=metadata.get(b"bgmrec_model_version", b"").decode(),
    )
    settings = settings or CatalogSettings()
    if len(catalog) < settings.index_min_size:
        return catalog
    index_path, _ = index_files(path)
    if not index_path.exists():
        logger.warning("%s: %d music but no vector index beside it (%s): searching exactly, ~170 ms a query at 1M; "
                       "run `bgmrec build-catalog` to write one", path, len(catalog), index_path.name)
        return catalog
    try:
        index = _read_index(path, catalog, settings)
    except CatalogError as exc:
        logger.warning("%s; searching the catalog exactly until `bgmrec build-catalog` writes a matching index", exc)
        return catalog
    return catalog._with(index=index)


def _read_index(path: Path, catalog: MusicCatalog, settings: CatalogSettings) -> VectorIndex:
    """The index saved beside the catalog at `path`, after checking that it is this catalog's; CatalogError
    naming the file and the mismatch otherwise."""
    import faiss

    index_path, record_path = index_files(path)
    try:
        record = json.loads(record_path.read_text())
    except FileNotFoundError:
        raise CatalogError(f"{index_path}: no {record_path.name} beside it to say which catalog it indexes; not "
                           "used") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CatalogError(f"{record_path} is damaged ({exc}); the index is not used") from None
    if not isinstance(record, dict) or record.get("format") != INDEX_FORMAT:
        raise CatalogError(f"{record_path}: not an index record of format {INDEX_FORMAT}; the index is not used")
    expected = {"rows": len(catalog), "dim": catalog.dim, "model_version": catalog.model_version,
                "ids_sha256": _ids_digest(catalog.ids), "index_bytes": index_path.stat().st_size}
    what = {"rows": "music", "dim": "dimensions", "model_version": "model version", "ids_sha256": "ids (digest)",
            "index_bytes": "file size (bytes)"}
    for key, value in expected.items():
        if record.get(key) != value:
            raise CatalogError(f"{index_path} is stale or foreign: it indexes {what[key]} {record.get(key)!r}, "
                               f"{'the index file has' if key == 'index_bytes' else path.name + ' has'} {value!r}")
    # Read into memory, not memory-mapped: faiss maps IVF lists read-only (OnDiskInvertedLists), which it cannot
    # copy, so such a catalog could not grow its index; and reading costs 0.4 s at 1M (0.5 GB), where a mapped
    # index pays page faults on its first queries instead (docs/decisions/vector-index.md).
    try:
        faiss_index = faiss.read_index(str(index_path))
    except RuntimeError as exc:
        raise CatalogError(f"{index_path}: faiss cannot read it ({str(exc).splitlines()[0]})") from None
    if faiss_index.ntotal != len(catalog) or faiss_index.d != catalog.dim:
        raise CatalogError(f"{index_path}: holds {faiss_index.ntotal} rows of {faiss_index.d} dims, its record "
                           f"says {len(catalog)} of {catalog.dim}")
    # The record and the index file are two renames apart: check that the file indexes these very embeddings
    # (each sampled row's embedding finds that row; another model's or catalog's vectors would not).
    index = VectorIndex(faiss_index, settings.nprobe, index_path)
    rows = np.unique(np.linspace(0, len(catalog) - 1, INDEX_SPOT_CHECKS).astype(np.int64))
    found = index.search(catalog.embeddings[rows], 10)
    if not all(row in hits for row, hits in zip(rows, found, strict=True)):
        raise CatalogError(f"{index_path}: it does not find {path.name}'s music by their own embeddings (it "
                           "indexes other vectors); not used")
    return index


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
