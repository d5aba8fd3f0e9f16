"""Short audio previews of the catalog's music: the middle seconds of a track as a small MP3, to listen to.

A preview is decoded with the project's FFmpeg decoding (`bgmrec.media.decode.decode_audio`, which takes the middle
of the clip), faded in and out, and encoded as mono MP3 by the same bundled FFmpeg (libmp3lame): MP3 plays in every
browser. The recommendations report inlines them; the service's try-it page serves them from REGISTRY/previews,
written beside the catalog by `catalog_previews_step`, so the service never needs the dataset's music files and a
replica reads them from the registry volume it already follows.

A preview file is named by a digest of its music id (ids are free text: slashes, spaces, any script).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

PREVIEWS_DIR = "previews"
PREVIEW_MEDIA_TYPE = "audio/mpeg"
PREVIEW_SUFFIX = ".mp3"
PREVIEW_SAMPLE_RATE = 22050
ENCODE_TIMEOUT_S = 120
FADE_SECONDS = 0.25


@dataclass(frozen=True)
class PreviewSettings:
    """How long a preview is and how small: `seconds` from the middle of the track at `bitrate_kbps` (mono)."""

    seconds: float = 8.0
    bitrate_kbps: int = 32

    def __post_init__(self) -> None:
        if not 0.5 <= self.seconds <= 60:
            raise ValueError(f"preview seconds={self.seconds}: must be between 0.5 and 60")
        if not 8 <= self.bitrate_kbps <= 160:
            raise ValueError(f"preview bitrate {self.bitrate_kbps} kbps: MP3 at 22.05 kHz takes 8 to 160 kbps")


def previews_dir(catalog_dir: str | Path) -> Path:
    """Where the previews of the catalog in `catalog_dir` (a registry, or a Bento model folder) are."""
    return Path(catalog_dir) / PREVIEWS_DIR


def preview_file(directory: str | Path, music_id: str) -> Path:
    """The preview file of one music in a previews directory."""
    digest = hashlib.sha256(str(music_id).encode("utf-8")).hexdigest()[:32]
    return Path(directory) / f"{digest}{PREVIEW_SUFFIX}"


def encode_preview(audio_path: str | Path, settings: PreviewSettings | None = None) -> bytes:
    """An MP3 preview of an audio file: its middle `settings.seconds`, faded in and out. Raises MediaError naming
    the file when it cannot be decoded or encoded."""
    from bgmrec.media.decode import MediaError, decode_audio, ffmpeg_exe

    settings = settings or PreviewSettings()
    signal = decode_audio(audio_path, PREVIEW_SAMPLE_RATE, settings.seconds)
    duration = len(signal) / PREVIEW_SAMPLE_RATE
    fade = min(FADE_SECONDS, duration / 4)
    filters = f"afade=t=in:d={fade:.3f},afade=t=out:st={max(duration - fade, 0):.3f}:d={fade:.3f}"
    command = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-f", "f32le", "-ar",
               str(PREVIEW_SAMPLE_RATE), "-ac", "1", "-i", "pipe:0", "-af", filters, "-map_metadata", "-1",
               "-c:a", "libmp3lame", "-b:a", f"{settings.bitrate_kbps}k", "-id3v2_version", "0", "-f", "mp3",
               "pipe:1"]
    try:
        done = subprocess.run(command, input=np.asarray(signal, "<f4").tobytes(), capture_output=True,
                              timeout=ENCODE_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise MediaError(f"{audio_path}: encoding its preview took longer than {ENCODE_TIMEOUT_S}s") from exc
    if done.returncode != 0 or not done.stdout:
        reason = done.stderr.decode(errors="replace").strip().splitlines()
        raise MediaError(f"{audio_path}: cannot encode its preview ({reason[-1] if reason else 'no output'})")
    return done.stdout


def write_atomically(path: Path, data: bytes) -> None:
    """Write a file so that a reader sees the old file or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(handle, 0o644)  # mkstemp makes 0600: the report and previews are for others to read
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def music_audio_paths(dataset_dir: str | Path) -> dict[str, Path]:
    """{music_id: audio file} for the dataset's music that have an audio file in the manifest."""
    import pandas as pd

    from bgmrec.data.contract import load_manifests
    from bgmrec.media.extract import resolve_media_path

    music, _ = load_manifests(dataset_dir)
    if "audio_path" not in music.columns:
        return {}
    root = Path(dataset_dir)
    return {str(row.music_id): resolve_media_path(root, row.audio_path)
            for row in music.itertuples(index=False) if not pd.isna(row.audio_path) and str(row.audio_path).strip()}


def catalog_previews_step(
    dataset_dir: str | Path, registry_dir: str | Path, settings: PreviewSettings | None = None, workers: int = 2,
) -> dict[str, Any]:
    """Write a preview of every catalog music whose audio file the dataset lists into REGISTRY/previews.

    A preview newer than its audio file is kept, so a re-run encodes only new or changed music. Music of the
    catalog the dataset has no audio file for (added by a music batch) gets none; a file that fails to decode is
    reported by id and skipped.
    """
    from bgmrec.catalog import read_music_ids, require_catalog

    ids = read_music_ids(require_catalog(registry_dir))
    audio = music_audio_paths(dataset_dir)
    out_dir = previews_dir(registry_dir)
    todo = []
    kept = 0
    for music_id in ids:
        source = audio.get(music_id)
        if source is None:
            continue
        target = preview_file(out_dir, music_id)
        if target.exists() and source.exists() and target.stat().st_mtime_ns >= source.stat().st_mtime_ns:
            kept += 1
        else:
            todo.append((music_id, source, target))
    settings = settings or PreviewSettings()

    def encode(item: tuple[str, Path, Path]) -> str | None:
        music_id, source, target = item
        try:
            write_atomically(target, encode_preview(source, settings))
        except ValueError as exc:  # MediaError: a missing, corrupt or silent file
            return f"{music_id}: {exc}"
        return None

    with ThreadPoolExecutor(max(1, workers)) as pool:
        failures = [reason for reason in pool.map(encode, todo) if reason is not None]
    return {"previews": str(out_dir), "written": len(todo) - len(failures), "kept": kept,
            "without_audio": sum(music_id not in audio for music_id in ids), "failures": failures}
