"""Decoding media with FFmpeg (the static binary `imageio-ffmpeg` ships): video frames at a fixed rate, resized and
centre-cropped for the CNN, and audio as 16 kHz mono float32, with `soundfile` as the fallback for audio FFmpeg
cannot read. Every failure raises `MediaError` naming the file and the problem.

Long media is bounded: at most `max_frames` frames spread evenly over the whole video (the frame rate is lowered),
and at most `max_seconds` of audio taken from the middle of the clip.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

PROBE_TIMEOUT_S = 60
DECODE_TIMEOUT_S = 600
# A stream that decodes to less than this share of its declared duration is reported as truncated.
MIN_DECODED_SHARE = 0.6

_DURATION = re.compile(r"Duration:\s*(\d+):(\d+):(\d+(?:\.\d+)?)")


class MediaError(ValueError):
    """A media file that cannot be decoded: the message names the file and what is wrong with it."""


@dataclass(frozen=True)
class ProbeResult:
    """What `ffmpeg -i` says about a file: container duration (None if unknown) and the stream kinds present."""

    duration: float | None
    has_video: bool
    has_audio: bool


@cache
def ffmpeg_exe() -> str:
    """Path of the FFmpeg binary bundled with imageio-ffmpeg (works offline, no system FFmpeg needed)."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def check_media_file(path: Path) -> None:
    """Raise MediaError if the path is missing, not a regular file or empty."""
    if not path.exists():
        raise MediaError(f"{path}: file not found")
    if not path.is_file():
        raise MediaError(f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: file is empty (0 bytes)")


def _ffmpeg_error(stderr: str) -> str:
    """The most telling line of FFmpeg's error output (the first line that names a problem)."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for line in lines:
        low = line.lower()
        if any(word in low for word in ("invalid", "not found", "error", "corrupt", "truncat", "unsupported")):
            return re.sub(r"^\[[^\]]*\]\s*", "", line)
    return lines[-1] if lines else "ffmpeg failed without a message"


def probe(path: str | Path) -> ProbeResult:
    """Read duration and stream kinds with `ffmpeg -i` (imageio-ffmpeg ships no ffprobe). Raises MediaError."""
    path = Path(path)
    check_media_file(path)
    try:
        proc = subprocess.run(
            [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=PROBE_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as exc:
        raise MediaError(f"{path}: ffmpeg did not finish reading the header in {PROBE_TIMEOUT_S}s") from exc
    stderr = proc.stderr
    if "Input #0" not in stderr:
        raise MediaError(f"{path}: cannot be opened as media ({_ffmpeg_error(stderr)})")
    match = _DURATION.search(stderr)
    duration = None
    if match:
        h, m, s = match.groups()
        duration = int(h) * 3600 + int(m) * 60 + float(s)
    streams = [ln for ln in stderr.splitlines() if ln.strip().startswith("Stream #")]
    # Cover art in audio files shows up as an attached-pic video stream: it is not a video.
    has_video = any(": Video:" in ln and "attached pic" not in ln for ln in streams)
    has_audio = any(": Audio:" in ln for ln in streams)
    return ProbeResult(duration, has_video, has_audio)


def _run_decoder(path: Path, args: list[str], what: str) -> bytes:
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=DECODE_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise MediaError(f"{path}: decoding {what} took longer than {DECODE_TIMEOUT_S}s") from exc
    if proc.returncode != 0:
        raise MediaError(f"{path}: cannot decode {what} ({_ffmpeg_error(proc.stderr.decode(errors='replace'))})")
    return proc.stdout


def decode_frames(path: str | Path, fps: float = 3.0, size: int = 224, max_frames: int = 48) -> np.ndarray:
    """Frames at `fps` (lowered so that at most `max_frames` cover the whole video), scaled so the short side is
    `size` and centre-cropped to size×size: uint8 array (n, size, size, 3), RGB. Raises MediaError.
    """
    path = Path(path)
    info = probe(path)
    if not info.has_video:
        raise MediaError(f"{path}: no video stream")
    rate = fps
    if info.duration and info.duration * fps > max_frames:
        rate = max_frames / info.duration
    vf = f"fps={rate:.6f},scale={size}:{size}:force_original_aspect_ratio=increase:flags=bilinear,crop={size}:{size}"
    raw = _run_decoder(
        path,
        [
            "-i",
            str(path),
            "-an",
            "-vf",
            vf,
            "-frames:v",
            str(max_frames),
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "pipe:1",
        ],
        "video frames",
    )
    frame_bytes = size * size * 3
    n = len(raw) // frame_bytes
    if n == 0:
        raise MediaError(f"{path}: no decodable video frame")
    if info.duration:
        expected = min(max_frames, int(info.duration * rate))
        if n < MIN_DECODED_SHARE * expected - 1:
            raise MediaError(
                f"{path}: truncated or corrupt video: decoded {n} frame(s), the header promises about {expected}"
            )
    return np.frombuffer(raw[: n * frame_bytes], dtype=np.uint8).reshape(n, size, size, 3).copy()


def _decode_audio_soundfile(path: Path, sample_rate: int, max_seconds: float) -> np.ndarray:
    import soundfile as sf
    import soxr

    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # noqa: BLE001 - libsndfile raises several types; all mean "cannot read"
        raise MediaError(f"{path}: cannot decode audio with soundfile either ({exc})") from exc
    mono = data.mean(axis=1)
    if rate != sample_rate:
        mono = soxr.resample(mono, rate, sample_rate).astype(np.float32)
    return _middle(mono, int(max_seconds * sample_rate))


def _middle(signal: np.ndarray, limit: int) -> np.ndarray:
    if len(signal) <= limit:
        return signal
    start = (len(signal) - limit) // 2
    return signal[start : start + limit]


def decode_audio(path: str | Path, sample_rate: int = 16000, max_seconds: float = 30.0) -> np.ndarray:
    """Mono float32 audio at `sample_rate`, at most `max_seconds` from the middle of the file. FFmpeg first;
    `soundfile` when FFmpeg cannot read the file (e.g. some Vorbis streams). Raises MediaError.
    """
    path = Path(path)
    try:
        info = probe(path)
    except MediaError as ffmpeg_problem:
        if not path.exists() or path.stat().st_size == 0:
            raise
        try:
            return _nonempty(path, _decode_audio_soundfile(path, sample_rate, max_seconds))
        except MediaError:
            raise ffmpeg_problem from None
    if not info.has_audio:
        raise MediaError(f"{path}: no audio stream")
    start = 0.0
    if info.duration and info.duration > max_seconds:
        start = (info.duration - max_seconds) / 2
    try:
        raw = _run_decoder(
            path,
            [
                "-ss",
                f"{start:.3f}",
                "-i",
                str(path),
                "-vn",
                "-t",
                f"{max_seconds:.3f}",
                "-ac",
                "1",
                "-ar",
                str(sample_rate),
                "-f",
                "f32le",
                "pipe:1",
            ],
            "audio",
        )
    except MediaError as ffmpeg_problem:
        try:
            signal = _decode_audio_soundfile(path, sample_rate, max_seconds)
        except MediaError:
            raise ffmpeg_problem from None
        return _nonempty(path, signal)
    signal = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    _nonempty(path, signal)
    if info.duration:
        expected = min(info.duration, max_seconds)
        got = len(signal) / sample_rate
        if got < MIN_DECODED_SHARE * expected - 0.1:
            raise MediaError(
                f"{path}: truncated or corrupt audio: decoded {got:.2f}s, the header promises {expected:.2f}s"
            )
    return signal


def _nonempty(path: Path, signal: np.ndarray) -> np.ndarray:
    if signal.size == 0:
        raise MediaError(f"{path}: no decodable audio sample")
    if not np.isfinite(signal).all():
        raise MediaError(f"{path}: decoded audio contains NaN or infinite samples")
    return signal
