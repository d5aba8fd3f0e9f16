"""The catalog's ledger of music batches, and the lock its writers take.

Every catalog change (a batch of new music added, a rebuild for a new production model) is one transaction under
an exclusive lock on REGISTRY/catalog.lock (`catalog_transaction`): it reads the catalog's manifest inside the
lock, so two batches added at once are both kept, and swaps in a new manifest with a rename, refused if the
manifest changed since it was read (bgmrec.catalog_storage: compare-and-swap). Each
accepted batch is recorded in REGISTRY/batches/<batch id>/ (its music ids, titles and feature vectors), so a
rebuild of the catalog — `dvc repro`, a new production model — re-embeds the base dataset's music and every
recorded batch instead of forgetting the batches. The batch id is a digest of the batch's content: recording the
same batch twice (a re-run of a killed pipeline) keeps one copy.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from bgmrec.data.contract import (
    MUSIC_FEATURES_FILE,
    DatasetError,
    MusicVectors,
    read_music_vectors,
    write_music_features,
)

BATCHES_DIR = "batches"
LOCK_FILE = "catalog.lock"
TITLES_FILE = "music.parquet"


@contextlib.contextmanager
def catalog_transaction(registry_dir: str | Path) -> Iterator[Path]:
    """An exclusive lock on the registry's catalog for one read-change-write (POSIX record lock: it holds across
    processes and, on NFS v4, across machines); yields the registry root."""
    root = Path(registry_dir)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / LOCK_FILE, "a+b") as handle:
        fcntl.lockf(handle, fcntl.LOCK_EX)
        try:
            yield root
        finally:
            fcntl.lockf(handle, fcntl.LOCK_UN)


def batch_id(vectors: MusicVectors) -> str:
    """A digest of a batch's music ids and vectors: the same batch always has the same id."""
    digest = hashlib.sha256()
    for music_id in vectors.ids:
        digest.update(str(music_id).encode() + b"\0")
    digest.update(np.ascontiguousarray(vectors.audio_embedding, np.float32).tobytes())
    digest.update(np.ascontiguousarray(vectors.audio_lld, np.float32).tobytes())
    return digest.hexdigest()[:16]


def record_batch(registry_dir: str | Path, vectors: MusicVectors, titles: dict[str, str | None]) -> str:
    """Keep an accepted batch (ids, titles, feature vectors) in REGISTRY/batches/<id>/; returns the id. Call it
    inside `catalog_transaction`. Recording a batch that is already there changes nothing."""
    root = Path(registry_dir) / BATCHES_DIR
    identifier = batch_id(vectors)
    target = root / identifier
    if target.is_dir():
        return identifier
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{identifier}.", dir=root))
    try:
        write_music_features(staging, vectors)
        pd.DataFrame({"music_id": [str(i) for i in vectors.ids],
                      "title": [titles.get(str(i)) for i in vectors.ids]}).to_parquet(staging / TITLES_FILE,
                                                                                   index=False)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return identifier


def recorded_batches(registry_dir: str | Path) -> list[tuple[MusicVectors, dict[str, str | None]]]:
    """Every recorded batch's vectors and titles, in the order they were recorded."""
    root = Path(registry_dir) / BATCHES_DIR
    if not root.is_dir():
        return []
    batches = []
    folders = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                     key=lambda p: (p.stat().st_mtime_ns, p.name))
    for folder in folders:
        problems: list[str] = []
        read = read_music_vectors(folder / MUSIC_FEATURES_FILE, problems)
        if read is None or problems:
            raise DatasetError([f"{folder}: recorded batch is damaged", *problems])
        titles = pd.read_parquet(folder / TITLES_FILE)
        batches.append((read[0], dict(zip(titles["music_id"].astype(str), titles["title"], strict=True))))
    return batches
