"""New music batches: a directory of audio files, with an optional manifest, checked before it enters the catalog.

A batch directory holds audio files and optionally `manifest.csv` (or `manifest.parquet`) with columns music_id,
title and optionally file (a path relative to the batch). Without a manifest every audio file is one music and
its id is the file name without extension. Optionally `videos.csv` / `videos.parquet` in the dataset contract's
videos shape (video_id, music_id, description, video_path) lists videos that use the new music, for a
strong-generalization Recall@K of the batch.

Every item is checked: the file exists and decodes as audio, the id is unique in the batch and not already in the
catalog. Rejected items are reported with id, file and reason; the accepted part goes on only if the batch as a
whole passes the rules in params.yaml `batch:` (a maximum share of rejected items, a minimum of accepted items).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bgmrec.media.config import section_params

AUDIO_SUFFIXES = frozenset({".wav", ".mp3", ".flac", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".aif", ".aiff"})
MANIFEST_NAMES = ("manifest.csv", "manifest.parquet")
VIDEO_MANIFEST_NAMES = ("videos.csv", "videos.parquet")
ACCEPTED_FILE = "music.parquet"
REPORT_FILE = "batch_report.json"
_ID_RE = re.compile(r"^[A-Za-z0-9_.@-]+$")


class BatchError(ValueError):
    """A batch that cannot be read at all (missing directory, unreadable manifest, missing columns)."""


@dataclass(frozen=True)
class BatchRules:
    """params.yaml `batch:` — when the accepted part of a batch may go on."""

    # Largest share of the batch's items that may be rejected (corrupt, duplicate, known id) for it to go on.
    max_rejected_fraction: float = 0.2
    # Fewest accepted items for the batch to go on.
    min_accepted: int = 1

    @classmethod
    def from_params(cls, params: dict[str, Any] | None) -> BatchRules:
        rules = cls(**section_params(cls, params, "batch"))
        if not 0.0 <= rules.max_rejected_fraction <= 1.0:
            raise ValueError(f"batch params: max_rejected_fraction={rules.max_rejected_fraction} is not in [0, 1]")
        if rules.min_accepted < 0:
            raise ValueError(f"batch params: min_accepted={rules.min_accepted} must be >= 0")
        return rules


@dataclass
class BatchItem:
    """One music of the batch: its id, title, absolute audio path, and why it was rejected (None if accepted)."""

    music_id: str
    title: str | None
    audio_path: str
    reason: str | None = None


@dataclass
class BatchReport:
    """The outcome of checking a batch: every item with its verdict, and whether the batch may go on."""

    batch_dir: str
    items: list[BatchItem]
    passed: bool
    reasons: list[str] = field(default_factory=list)
    has_videos: bool = False

    @property
    def accepted(self) -> list[BatchItem]:
        return [item for item in self.items if item.reason is None]

    @property
    def rejected(self) -> list[BatchItem]:
        return [item for item in self.items if item.reason is not None]

    def summary(self) -> str:
        """A short human-readable report: the verdict, the rule that failed, one line per rejected item."""
        verdict = "accepted" if self.passed else "REFUSED"
        lines = [
            f"music batch {self.batch_dir}: {verdict} — {len(self.accepted)} of {len(self.items)} item(s) usable, "
            f"{len(self.rejected)} rejected"
        ]
        lines += [f"  rule: {reason}" for reason in self.reasons]
        lines += [f"  rejected {item.music_id} ({item.audio_path}): {item.reason}" for item in self.rejected]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "batch_dir": self.batch_dir,
            "passed": self.passed,
            "reasons": self.reasons,
            "has_videos": self.has_videos,
            "n_items": len(self.items),
            "n_accepted": len(self.accepted),
            "n_rejected": len(self.rejected),
            "items": [asdict(item) for item in self.items],
        }


def _read_table(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, dtype=str)
    except Exception as exc:  # noqa: BLE001 - any reader error means the same thing for the user
        raise BatchError(f"{path}: cannot read the manifest ({exc})") from exc


def _find(batch_dir: Path, names: Iterable[str]) -> Path | None:
    found = [batch_dir / name for name in names if (batch_dir / name).exists()]
    if len(found) > 1:
        raise BatchError(f"{batch_dir}: more than one manifest ({', '.join(p.name for p in found)}); keep one")
    return found[0] if found else None


def _items_from_manifest(batch_dir: Path, manifest: Path) -> list[BatchItem]:
    frame = _read_table(manifest)
    if "music_id" not in frame.columns:
        raise BatchError(f"{manifest}: missing column music_id (columns: {', '.join(frame.columns)})")
    audio_files = {p.stem: p for p in batch_dir.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES}
    items = []
    for row in frame.to_dict("records"):
        music_id = "" if pd.isna(row["music_id"]) else str(row["music_id"]).strip()
        title = row.get("title")
        title = None if title is None or pd.isna(title) else str(title)
        file = row.get("file")
        if file is not None and not pd.isna(file):
            path = (batch_dir / str(file)).resolve()
        elif music_id in audio_files:
            path = audio_files[music_id].resolve()
        else:
            path = batch_dir / f"{music_id}.<no audio file>"
        items.append(BatchItem(music_id, title, str(path)))
    return items


def _items_from_files(batch_dir: Path) -> list[BatchItem]:
    files = sorted(p for p in batch_dir.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
    return [BatchItem(p.stem, None, str(p.resolve())) for p in files]


def _check_item(item: BatchItem, batch_dir: Path, duplicated: set[str], known: set[str], decode) -> str | None:
    """The first reason this item cannot enter the catalog, or None."""
    from bgmrec.media.decode import MediaError

    if not item.music_id:
        return "empty music_id"
    if not _ID_RE.match(item.music_id):
        return f"music_id '{item.music_id}' may only hold letters, digits and _.@-"
    if item.music_id in duplicated:
        return f"duplicate music_id '{item.music_id}' in the batch"
    if item.music_id in known:
        return f"music_id '{item.music_id}' is already in the catalog"
    path = Path(item.audio_path)
    if not path.is_relative_to(batch_dir.resolve()):
        return f"file {path} is outside the batch directory"
    if not path.is_file():
        return "audio file not found"
    if path.suffix.lower() not in AUDIO_SUFFIXES:
        return f"unsupported file type '{path.suffix}' (audio: {', '.join(sorted(AUDIO_SUFFIXES))})"
    try:
        decode(path)
    except MediaError as exc:
        return f"corrupt or unreadable audio: {exc}"
    return None


def check_music_batch(
    batch_dir: str | Path,
    known_ids: Iterable[str],
    rules: BatchRules,
    sample_rate: int = 16000,
    max_audio_seconds: float = 30.0,
) -> BatchReport:
    """Check every item of a batch (see module doc) and apply the rules; never raises for bad items."""
    from bgmrec.media.decode import decode_audio

    batch_dir = Path(batch_dir)
    if not batch_dir.is_dir():
        raise BatchError(f"{batch_dir}: music batch directory not found")
    manifest = _find(batch_dir, MANIFEST_NAMES)
    items = _items_from_manifest(batch_dir, manifest) if manifest else _items_from_files(batch_dir)
    counts = Counter(item.music_id for item in items)
    duplicated = {music_id for music_id, n in counts.items() if n > 1}
    known = set(map(str, known_ids))

    def decode(path: Path) -> None:
        decode_audio(path, sample_rate=sample_rate, max_seconds=max_audio_seconds)

    for item in items:
        item.reason = _check_item(item, batch_dir, duplicated, known, decode)
    reasons = []
    if not items:
        reasons.append(f"no audio files ({', '.join(sorted(AUDIO_SUFFIXES))}) and no manifest rows")
    n_rejected = sum(item.reason is not None for item in items)
    if items and n_rejected / len(items) > rules.max_rejected_fraction:
        reasons.append(
            f"{n_rejected} of {len(items)} item(s) rejected ({n_rejected / len(items):.0%}), more than "
            f"max_rejected_fraction {rules.max_rejected_fraction:.0%}"
        )
    if len(items) - n_rejected < rules.min_accepted:
        reasons.append(f"{len(items) - n_rejected} item(s) accepted, fewer than min_accepted {rules.min_accepted}")
    has_videos = _find(batch_dir, VIDEO_MANIFEST_NAMES) is not None
    return BatchReport(str(batch_dir), items, not reasons, reasons, has_videos)


def write_batch(report: BatchReport, out_dir: str | Path) -> Path:
    """Write the accepted items as music.parquet (contract columns, absolute audio paths) and the report JSON."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    accepted = report.accepted if report.passed else []
    music = pd.DataFrame(
        {
            "music_id": pd.Series([i.music_id for i in accepted], dtype=str),
            "title": pd.Series([i.title for i in accepted], dtype=object),
            "audio_path": pd.Series([i.audio_path for i in accepted], dtype=str),
        }
    )
    music.to_parquet(out_dir / ACCEPTED_FILE, index=False)
    (out_dir / REPORT_FILE).write_text(json.dumps(report.to_dict(), indent=2))
    return out_dir


def read_batch_videos(batch_dir: str | Path) -> pd.DataFrame | None:
    """The batch's videos manifest (video_id, music_id, description, video_path), or None when it has none."""
    path = _find(Path(batch_dir), VIDEO_MANIFEST_NAMES)
    if path is None:
        return None
    frame = _read_table(path)
    missing = {"video_id", "music_id"} - set(frame.columns)
    if missing:
        raise BatchError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    return frame
