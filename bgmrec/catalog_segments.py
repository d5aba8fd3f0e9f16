"""A batch of new music added to the stored catalog as a segment, at a cost that follows the batch.

`append_batch` reads the manifest (bgmrec.catalog_storage), checks the batch (its model, widths, values and ids),
leaves out music the catalog already holds (each part's sorted id hashes are searched: no id column of the base
is read), writes the rest as the part `segment-<batch>` and swaps in a manifest that adds it, refused if the
manifest changed since it was read. The base, its index and the other segments are not touched; a replica adds
the segment's rows to the base's index when it loads the catalog. The one exception: a catalog that reaches
`catalog.index_min_size` without an index is rewritten as one base with a new index.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from bgmrec.catalog_storage import (
    ID_HASHES_FILE,
    MUSIC_FILE,
    PART_NAME,
    CatalogError,
    Manifest,
    catalog_path,
    id_hashes,
    manifest_identity,
    parts_dir,
    read_catalog,
    read_manifest,
    write_catalog,
    write_manifest,
    write_part,
)
from bgmrec.config import CatalogSettings
from bgmrec.vector_index import build_vector_index


@dataclass(frozen=True)
class Appended:
    """What `append_batch` did: music added (0 for a batch already there), rows before and after, versions."""

    added: int
    rows_before: int
    rows_after: int
    version: int
    indexed: bool


def _present(path: Path, manifest: Manifest, ids: np.ndarray) -> np.ndarray:
    """Which ids the stored catalog already holds: each part's sorted id hashes are searched (no id column is
    read unless a hash matches, to rule out a collision)."""
    hashes = id_hashes(ids)
    present = np.zeros(len(ids), bool)
    for part in manifest.parts:
        stored = np.load(parts_dir(path) / part.name / ID_HASHES_FILE, mmap_mode="r")
        if not len(stored):
            continue
        at = np.minimum(np.searchsorted(stored, hashes), len(stored) - 1)
        hit = np.asarray(stored[at]) == hashes
        if hit.any():
            names = set(pq.read_table(parts_dir(path) / part.name / MUSIC_FILE, columns=["music_id"])
                        .column("music_id").to_pylist())
            present |= hit & np.asarray([str(i) in names for i in ids])
    return present


def append_batch(path: str | Path, batch: str, ids: Sequence[str], embeddings: np.ndarray,
                 titles: Sequence[str | None], model_version: str, settings: CatalogSettings) -> Appended:
    """Add a batch of new music to the stored catalog as the segment `segment-<batch>`; call it inside
    `bgmrec.ledger.catalog_transaction`. Music the catalog already holds (a re-run, or another batch's) is not
    added again; a batch whose segment is already named adds nothing. Costs follow the batch, except when the
    catalog reaches `settings.index_min_size` without an index: then it is rewritten as one base with a new index.
    """
    from bgmrec.models.base import l2_normalise

    path = catalog_path(path)
    identity = manifest_identity(path)
    manifest = read_manifest(path)
    if manifest.model_version and manifest.model_version != model_version:
        raise CatalogError(f"{path} was embedded by model {manifest.model_version} but production is "
                           f"{model_version}: rebuild the catalog (`bgmrec build-catalog`) before adding music")
    ids_arr = np.asarray([str(i) for i in ids], dtype=object)
    emb = np.asarray(embeddings, dtype=np.float32)
    if emb.ndim != 2 or len(emb) != len(ids_arr) or (len(emb) and emb.shape[1] != manifest.dim):
        raise CatalogError(f"batch {batch}: embeddings have shape {emb.shape}, expected ({len(ids_arr)}, "
                           f"{manifest.dim})")
    unique, counts = np.unique(ids_arr.astype(str), return_counts=True)
    if (counts > 1).any():
        raise CatalogError(f"batch {batch}: music id {unique[counts > 1][0]} appears more than once")
    if not np.isfinite(emb).all():
        bad = int(np.flatnonzero(~np.isfinite(emb).all(axis=1))[0])
        raise CatalogError(f"batch {batch}: music {ids_arr[bad]}: embedding contains NaN or infinite values")
    name = f"segment-{batch}"
    if not PART_NAME.match(name):
        raise CatalogError(f"batch {batch!r}: not a batch id (letters, digits and _, at most 64)")
    fresh = np.zeros(0, np.int64) if any(p.name == name for p in manifest.parts) else \
        np.flatnonzero(~_present(path, manifest, ids_arr))
    indexed = manifest.parts[0].index_bytes > 0
    if not len(fresh):
        return Appended(0, manifest.rows, manifest.rows, manifest.version,
                        indexed and manifest.rows >= settings.index_min_size)
    titles_arr = np.asarray([t if isinstance(t, str) else i for t, i in zip(titles, ids_arr, strict=True)],
                            dtype=object)
    new = (ids_arr[fresh], titles_arr[fresh], l2_normalise(emb[fresh]), np.zeros(len(fresh)), np.ones(len(fresh), bool))
    rows = manifest.rows + len(fresh)
    if rows >= settings.index_min_size and not indexed:
        old = read_catalog(path, settings)
        columns = [np.concatenate([a, b]) for a, b in zip(
            (old.ids, old.titles, old.embeddings, old.popularity, old.is_new), new, strict=True)]
        write_catalog(path, *columns, manifest.version + 1, manifest.model_version,
                      build_vector_index(columns[2], settings))
        return Appended(len(fresh), manifest.rows, rows, manifest.version + 1, True)
    segment = write_part(path, name, *new, index=None)
    write_manifest(path, Manifest((*manifest.parts, segment), manifest.version + 1, manifest.model_version,
                                   manifest.dim), expected=identity, check=True)
    return Appended(len(fresh), manifest.rows, rows, manifest.version + 1, indexed and rows >= settings.index_min_size)
