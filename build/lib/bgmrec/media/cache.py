"""A content-hash cache of per-file features: a re-run skips every file whose bytes and extractor are unchanged.

Key = (extractor signature, SHA-256 of the file's bytes or of the description's UTF-8), so renaming or moving a file
keeps its entry, while editing the file, changing the extractor's settings or its weights misses.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np

CHUNK = 1 << 20


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def text_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class FeatureCache:
    """Vectors stored as .npy files under ROOT/<extractor signature>/<digest[:2]>/<digest>.npy."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.hits = 0
        self.misses = 0

    def _path(self, signature: str, digest: str) -> Path:
        return self.root / signature / digest[:2] / f"{digest}.npy"

    def get(self, signature: str, digest: str) -> np.ndarray | None:
        path = self._path(signature, digest)
        try:
            vector = np.load(path, allow_pickle=False)
        except (FileNotFoundError, ValueError, OSError):
            self.misses += 1
            return None
        self.hits += 1
        return vector

    def put(self, signature: str, digest: str, vector: np.ndarray) -> None:
        """Write atomically (temp file + rename), so a killed run never leaves a half-written entry."""
        path = self._path(signature, digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                np.save(handle, np.asarray(vector, np.float32), allow_pickle=False)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
