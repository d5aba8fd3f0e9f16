"""The catalog's vector index: a faiss IVF-SQ8 index (inner product on unit-norm rows) that proposes candidates.

k-means lists of 8-bit codes, the `nprobe` lists whose centroids are nearest the query scanned. The index only
proposes a pool of candidates: `MusicCatalog` re-scores them exactly with its float32 embeddings, so the codes'
approximation never reaches a ranking. Parameters and the measurement that chose them (against an HNSW graph over
the centroids, which did not make it faster): docs/decisions/vector-index.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bgmrec.config import CatalogSettings

# Rows searched by their own embeddings when an index is read (a last check that the file indexes these
# embeddings, whatever its record says).
INDEX_SPOT_CHECKS = 8


class VectorIndexError(ValueError):
    """An index file that cannot serve a catalog: unreadable, of another size, or indexing other vectors."""


@dataclass(frozen=True)
class VectorIndex:
    """A faiss IVF-SQ8 index over the first `rows` rows of a catalog, searched with `nprobe`.

    Never modified once a catalog holds it: catalogs share it (`MusicCatalog.add`), and faiss searches of one
    index from several threads are safe only while nobody adds to it.
    """

    faiss_index: Any
    nprobe: int
    # The file it was read from; None when it was built (or grown) in this process.
    path: Path | None = None
    # The search parameters, made once (a faiss object per query costs more than re-scoring the pool).
    _params: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        import faiss

        object.__setattr__(self, "_params", faiss.SearchParametersIVF(nprobe=self.nprobe))

    @property
    def rows(self) -> int:
        return int(self.faiss_index.ntotal)

    def search(self, queries: np.ndarray, pool: int) -> np.ndarray:
        """The `pool` best rows (by the index's SQ8 scores over the lists probed) of each query, one batched
        faiss call; -1 pads a row when the probed lists hold fewer."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        _, rows = self.faiss_index.search(queries, min(pool, self.rows), params=self._params)
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


def write_vector_index(index: VectorIndex, path: Path) -> None:
    import faiss

    faiss.write_index(index.faiss_index, str(path))


def read_vector_index(path: Path, embeddings: np.ndarray, settings: CatalogSettings) -> VectorIndex:
    """The index in `path`, read into memory, after checking that it indexes exactly these `embeddings` (its
    size and dimensions, and sampled rows found by their own embeddings); VectorIndexError naming the file and
    the mismatch otherwise.

    Read into memory, not memory-mapped: faiss maps IVF lists read-only (OnDiskInvertedLists), which it cannot
    copy or add to, and a mapped index pays page faults on its first queries (docs/decisions/vector-index.md).
    """
    import faiss

    try:
        faiss_index = faiss.read_index(str(path))
    except RuntimeError as exc:
        raise VectorIndexError(f"{path}: faiss cannot read it ({str(exc).splitlines()[0]})") from None
    if faiss_index.ntotal != len(embeddings) or faiss_index.d != embeddings.shape[1]:
        raise VectorIndexError(f"{path}: holds {faiss_index.ntotal} rows of {faiss_index.d} dims, the catalog "
                               f"part it belongs to {len(embeddings)} of {embeddings.shape[1]}")
    index = VectorIndex(faiss_index, settings.nprobe, path)
    rows = np.unique(np.linspace(0, len(embeddings) - 1, INDEX_SPOT_CHECKS).astype(np.int64))
    found = index.search(embeddings[rows], 10)
    if not all(row in hits for row, hits in zip(rows, found, strict=True)):
        raise VectorIndexError(f"{path}: it does not find the catalog's music by their own embeddings (it indexes "
                               "other vectors)")
    return index
