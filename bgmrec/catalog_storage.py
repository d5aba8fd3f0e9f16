"""The catalog on disk: a manifest naming immutable parts, swapped atomically on every change.

    REGISTRY/catalog.parquet                     the manifest: one row per part, in catalog order (the base, then
                                                 the segments); schema metadata: format, catalog version, model
                                                 version, dimensions. The one file readers watch.
    REGISTRY/catalog.parts/<part>/embeddings.npy float32 rows, unit-norm (normalised when written)
                                 music.parquet   music_id, title, popularity, is_new
                                 id_hashes.npy   the ids' 64-bit hashes, sorted (membership without the ids)
                                 vector.index    the faiss index over the part's rows (the base of a large catalog)

A rebuild (`MusicCatalog.save`) writes a new base and a manifest naming it alone: it compacts. A batch of new
music (`append_batch`) writes a segment named after the batch and a manifest naming the old parts and it: its
cost follows the batch, not the catalog. Parts are never changed once named: a writer stages a part in a temp
folder, renames it in, then replaces the manifest (a temp file and a rename); a part no manifest names is removed
after the swap. A reader reads the manifest once and the parts it names, so it sees the old catalog or the new
one, never a mix; a part removed under it (a rebuild between the two reads) sends it back to the new manifest.
Writers hold `bgmrec.ledger.catalog_transaction`; `append_batch` also refuses to swap a manifest that changed
since it read it (compare-and-swap).

Loading never re-normalises: each part's embeddings are checked against the SHA-256 the manifest recorded when
they were written (one pass over the bytes, which also brings them into memory).
"""

from __future__ import annotations

import hashlib
import logging
import mmap
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bgmrec.config import CatalogSettings
from bgmrec.vector_index import (
    VectorIndex,
    VectorIndexError,
    read_vector_index,
    write_vector_index,
)

logger = logging.getLogger("bgmrec.catalog")

CATALOG_FILE = "catalog.parquet"
FORMAT = 2
EMBEDDINGS_FILE = "embeddings.npy"
MUSIC_FILE = "music.parquet"
ID_HASHES_FILE = "id_hashes.npy"
INDEX_FILE = "vector.index"
MUSIC_COLUMNS = ("music_id", "title", "popularity", "is_new")
PART_NAME = re.compile(r"^(base|segment)-[0-9A-Za-z_]{1,64}$")
# A reader whose parts were removed under it (rebuilds in between) reads the new manifest; this many times.
READ_ATTEMPTS = 3
# Embeddings are read and hashed in chunks of this many bytes (the chunk is hashed while it is in cache).
READ_CHUNK = 32 * 2**20


class CatalogError(ValueError):
    """A catalog operation that cannot be done (duplicate ids, wrong embedding width, missing or damaged file)."""


@dataclass(frozen=True)
class Part:
    """One immutable part of a stored catalog, as the manifest names it."""

    name: str
    rows: int
    sha256: str
    index_bytes: int = 0  # size of the part's vector.index; 0 = none


@dataclass(frozen=True)
class Manifest:
    parts: tuple[Part, ...]
    version: int
    model_version: str
    dim: int

    @property
    def rows(self) -> int:
        return sum(part.rows for part in self.parts)


@dataclass(frozen=True)
class StoredCatalog:
    """A catalog as read from its files: unit-norm embeddings and, when it is used, the base's vector index (the
    segments' rows added to it in memory)."""

    ids: np.ndarray
    titles: np.ndarray
    embeddings: np.ndarray
    popularity: np.ndarray
    is_new: np.ndarray
    version: int
    model_version: str
    index: VectorIndex | None


def parts_dir(path: Path) -> Path:
    """The folder of a manifest's parts: catalog.parquet -> catalog.parts."""
    return path.with_suffix(".parts")


def catalog_path(path: str | Path) -> Path:
    """The manifest of a catalog given as its file or its folder."""
    path = Path(path)
    return path / CATALOG_FILE if path.is_dir() else path


def require_catalog(registry_dir: str | Path) -> Path:
    """REGISTRY/catalog.parquet; FileNotFoundError saying how to make it when there is none."""
    path = Path(registry_dir) / CATALOG_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; run `bgmrec build-catalog` first")
    return path


def index_files(path: str | Path) -> tuple[Path, ...]:
    """The vector index file of the catalog's base (it exists when the base is indexed); () without a catalog."""
    path = catalog_path(path)
    if not path.exists():
        return ()
    return (parts_dir(path) / read_manifest(path).parts[0].name / INDEX_FILE,)


def catalog_files(path: str | Path) -> list[Path]:
    """Every file of the catalog: the manifest, then each part's files."""
    path = catalog_path(path)
    files = [path]
    for part in read_manifest(path).parts:
        files += sorted(p for p in (parts_dir(path) / part.name).iterdir() if p.is_file())
    return files


def copy_catalog(path: str | Path, target: str | Path) -> Path:
    """Copy the catalog at `path` to the manifest path `target` (its parts first, the manifest last)."""
    path, target = catalog_path(path), Path(target)
    files = catalog_files(path)
    for file in files[1:]:
        destination = parts_dir(target) / file.relative_to(parts_dir(path))
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(file, destination)
    shutil.copy2(path, target)
    return target


def manifest_identity(path: Path) -> tuple[int, int, int] | None:
    """(inode, size, mtime) of the manifest file, None when there is none: every swap changes it."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def read_manifest(path: Path) -> Manifest:
    """The manifest at `path`; a CatalogError names the file when it is missing, damaged or of another format."""
    try:
        # One read of the bytes: parquet readers open a path more than once, and a writer may replace the file
        # in between.
        table = pq.read_table(pa.BufferReader(path.read_bytes()))
    except FileNotFoundError:
        raise CatalogError(f"{path}: no catalog file; run `bgmrec build-catalog` first") from None
    except (pa.ArrowException, OSError) as exc:
        raise CatalogError(f"{path} is damaged ({exc}); run `bgmrec build-catalog` again") from None
    metadata = table.schema.metadata or {}
    if metadata.get(b"bgmrec_catalog_format") != str(FORMAT).encode():
        raise CatalogError(f"{path}: not a catalog manifest of format {FORMAT} (written by another version of "
                           "bgmrec); run `bgmrec build-catalog` to rewrite it")
    rows = table.to_pylist()
    names = [row.get("part") for row in rows]
    try:
        manifest = Manifest(
            tuple(Part(r["part"], int(r["rows"]), str(r["sha256"]), int(r["index_bytes"])) for r in rows),
            version=int(metadata.get(b"bgmrec_catalog_version", b"0")),
            model_version=metadata.get(b"bgmrec_model_version", b"").decode(),
            dim=int(metadata[b"bgmrec_dim"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CatalogError(f"{path} is damaged (no valid {exc}); run `bgmrec build-catalog` again") from None
    if not rows or not all(isinstance(n, str) and PART_NAME.match(n) for n in names) or \
            not names[0].startswith("base-") or any(n.startswith("base-") for n in names[1:]):
        raise CatalogError(f"{path} is damaged (its parts {names} are not a base followed by segments); run "
                           "`bgmrec build-catalog` again")
    return manifest


def write_manifest(path: Path, manifest: Manifest, expected: tuple[int, int, int] | None = None,
                   check: bool = False) -> None:
    """Replace the manifest atomically (a temp file and a rename). With `check`, compare-and-swap: refused unless
    the manifest's identity is still `expected`, the one the writer read (None: there was none)."""
    table = pa.table({
        "part": [p.name for p in manifest.parts],
        "rows": pa.array([p.rows for p in manifest.parts], pa.int64()),
        "sha256": [p.sha256 for p in manifest.parts],
        "index_bytes": pa.array([p.index_bytes for p in manifest.parts], pa.int64()),
    }).replace_schema_metadata({
        "bgmrec_catalog_format": str(FORMAT), "bgmrec_catalog_version": str(manifest.version),
        "bgmrec_model_version": manifest.model_version, "bgmrec_dim": str(manifest.dim),
    })
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        if check and manifest_identity(path) != expected:
            raise CatalogError(f"{path} changed while this transaction held the catalog lock: a writer that does "
                               "not take bgmrec.ledger.catalog_transaction; nothing was changed")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _collect_garbage(path: Path, manifest: Manifest) -> None:
    """Remove the parts (and staging folders of killed writers) the manifest does not name."""
    keep = {part.name for part in manifest.parts}
    for folder in parts_dir(path).iterdir():
        if folder.is_dir() and folder.name not in keep:
            shutil.rmtree(folder, ignore_errors=True)


def id_hashes(ids: Sequence[str]) -> np.ndarray:
    """64-bit BLAKE2b of each id (stable across versions and machines)."""
    return np.fromiter((int.from_bytes(hashlib.blake2b(str(i).encode(), digest_size=8).digest(), "little")
                        for i in ids), dtype=np.uint64, count=len(ids))


def write_part(path: Path, name: str, ids: np.ndarray, titles: np.ndarray, embeddings: np.ndarray,
                popularity: np.ndarray, is_new: np.ndarray, index: VectorIndex | None) -> Part:
    """Stage a part's files in a temp folder and rename it to parts/<name>; the embeddings are unit-norm."""
    folder = parts_dir(path)
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=folder))
    try:
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        np.save(staging / EMBEDDINGS_FILE, embeddings)
        pq.write_table(pa.table({
            "music_id": pa.array(np.asarray(ids).astype(str)), "title": pa.array(np.asarray(titles).astype(str)),
            "popularity": pa.array(np.asarray(popularity, np.float64)), "is_new": pa.array(np.asarray(is_new, bool)),
        }), staging / MUSIC_FILE)
        np.save(staging / ID_HASHES_FILE, np.sort(id_hashes(ids)))
        index_bytes = 0
        if index is not None:
            write_vector_index(index, staging / INDEX_FILE)
            index_bytes = (staging / INDEX_FILE).stat().st_size
        target = folder / name
        if target.exists():  # left by a writer killed before its manifest named it
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Part(name, len(ids), hashlib.sha256(embeddings).hexdigest(), index_bytes)


def write_catalog(path: Path, ids: np.ndarray, titles: np.ndarray, embeddings: np.ndarray, popularity: np.ndarray,
                  is_new: np.ndarray, version: int, model_version: str, index: VectorIndex | None) -> Path:
    """Write the whole catalog as one new base (with `index` over every row, if given) and a manifest naming it
    alone; the parts of the previous catalog are removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    base = write_part(path, f"base-{secrets.token_hex(8)}", ids, titles, embeddings, popularity, is_new, index)
    manifest = Manifest((base,), version, model_version, int(embeddings.shape[1]))
    write_manifest(path, manifest)
    _collect_garbage(path, manifest)
    return path


def allocate_matrix(rows: int, dim: int) -> np.ndarray:
    """An uninitialised float32 (rows, dim) matrix; on Linux in transparent huge pages where the kernel offers
    them on request, which makes first touching 2 GB several times cheaper than 4 KB pages."""
    nbytes = rows * dim * 4
    if nbytes < 2**26 or not hasattr(mmap, "MADV_HUGEPAGE"):
        return np.empty((rows, dim), np.float32)
    buffer = mmap.mmap(-1, nbytes)
    buffer.madvise(mmap.MADV_HUGEPAGE)
    return np.frombuffer(buffer, np.float32).reshape(rows, dim)


def _read_embeddings(file: Path, out: np.ndarray, sha256: str) -> None:
    """Read a part's .npy into `out` (its rows of the catalog's matrix), checking shape, type and checksum."""
    with open(file, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                  else np.lib.format.read_array_header_2_0)(handle)
        if header != (out.shape, False, np.dtype("<f4")):
            raise CatalogError(f"{file}: holds {header[2]} {header[0]}, the manifest says float32 {out.shape}")
        digest, view, done = hashlib.sha256(), memoryview(out.reshape(-1).view(np.uint8)), 0
        while done < len(view):
            read = handle.readinto(view[done:done + READ_CHUNK])
            if not read:
                break
            digest.update(view[done:done + read])
            done += read
    if done != len(view) or digest.hexdigest() != sha256:
        raise CatalogError(f"{file} is damaged (its bytes do not match the checksum the manifest recorded); run "
                           "`bgmrec build-catalog` again")


def _read_parts(path: Path, manifest: Manifest, settings: CatalogSettings) -> StoredCatalog:
    folder = parts_dir(path)
    tables = []
    for part in manifest.parts:
        table = pq.read_table(folder / part.name / MUSIC_FILE, columns=list(MUSIC_COLUMNS))
        if table.num_rows != part.rows:
            raise CatalogError(f"{folder / part.name / MUSIC_FILE}: {table.num_rows} music, the manifest says "
                               f"{part.rows}")
        tables.append(table)
    music = pa.concat_tables(tables)
    embeddings = allocate_matrix(manifest.rows, manifest.dim)
    start = 0
    for part in manifest.parts:
        _read_embeddings(folder / part.name / EMBEDDINGS_FILE, embeddings[start:start + part.rows], part.sha256)
        start += part.rows
    base = manifest.parts[0]
    index = None
    if manifest.rows >= settings.index_min_size:
        if not base.index_bytes:
            logger.warning("%s: %d music but no vector index (its base was written below `catalog.index_min_size`):"
                           " searching exactly, ~170 ms a query at 1M; run `bgmrec build-catalog` to write one",
                           path, manifest.rows)
        else:
            index = _read_base_index(folder / base.name / INDEX_FILE, base, embeddings, settings)
    return StoredCatalog(
        ids=music.column("music_id").to_numpy(zero_copy_only=False).astype(object, copy=False),
        titles=music.column("title").to_numpy(zero_copy_only=False).astype(object, copy=False),
        embeddings=embeddings,
        popularity=music.column("popularity").to_numpy(zero_copy_only=False),
        is_new=music.column("is_new").to_numpy(zero_copy_only=False),
        version=manifest.version, model_version=manifest.model_version, index=index)


def _read_base_index(file: Path, base: Part, embeddings: np.ndarray, settings: CatalogSettings) -> VectorIndex | None:
    """The base's index with the segments' rows added (in memory), or None with a warning naming the problem."""
    try:
        size = file.stat().st_size
        if size != base.index_bytes:
            raise VectorIndexError(f"{file}: {size} bytes, the manifest recorded {base.index_bytes}")
        index = read_vector_index(file, embeddings[:base.rows], settings)
    except VectorIndexError as exc:
        logger.warning("%s; searching the catalog exactly until `bgmrec build-catalog` writes a matching index", exc)
        return None
    if len(embeddings) == base.rows:
        return index
    index.faiss_index.add(np.ascontiguousarray(embeddings[base.rows:]))  # read just now: this process owns it
    return VectorIndex(index.faiss_index, index.nprobe, index.path)  # its search parameters for the new size


def read_catalog(path: str | Path, settings: CatalogSettings) -> StoredCatalog:
    """The catalog whose manifest is at `path` (or in the folder `path`), as one consistent version."""
    path = catalog_path(path)
    for _ in range(READ_ATTEMPTS):
        identity = manifest_identity(path)
        manifest = read_manifest(path)
        try:
            return _read_parts(path, manifest, settings)
        except FileNotFoundError as exc:
            if manifest_identity(path) == identity:
                raise CatalogError(f"{exc.filename}: a part {path.name} names is missing; run `bgmrec build-catalog` "
                                   "again") from None
    raise CatalogError(f"{path} was replaced {READ_ATTEMPTS} times while it was read; try again")


def read_music_ids(path: str | Path) -> list[str]:
    """Music ids of a stored catalog (only that column of each part is read); [] when there is no catalog."""
    path = catalog_path(path)
    if not path.exists():
        return []
    return [str(i) for part in read_manifest(path).parts
            for i in pq.read_table(parts_dir(path) / part.name / MUSIC_FILE, columns=["music_id"])
            .column("music_id").to_pylist()]


def stored_version(path: str | Path) -> int | None:
    """The version of the stored catalog (of any format: a rebuild follows it), None when there is none."""
    path = catalog_path(path)
    try:
        metadata = pq.read_schema(path).metadata or {}
    except FileNotFoundError:
        return None
    except (pa.ArrowException, OSError) as exc:
        raise CatalogError(f"{path} is damaged ({exc}); remove it and run `bgmrec build-catalog` again") from None
    return int(metadata.get(b"bgmrec_catalog_version", b"0"))
