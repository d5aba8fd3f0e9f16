"""Extraction speed per extractor: seconds per 10 s of video and per 30 s of music on CPU (torch threads = 2).

Targets with the default settings (issue 5): <= 1 s per 10 s of video, <= 1 s per 30 s of music. The figures
depend on how busy the machine is, so the load average is recorded beside them. Never fails on timing.

    .venv/bin/python bench/bench_extract.py [--repeats 3] [--out bench/results/extract.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np


def _timed(fn, repeats: int) -> tuple[float, object]:
    """Median seconds of `repeats` calls after one warm-up call (model loading is measured separately)."""
    out = fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch / BLAS threads (the target machine: 2 cores)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "extract.json")
    args = parser.parse_args()

    import soundfile as sf
    import torch

    from bgmrec.media.config import ExtractionConfig
    from bgmrec.media.decode import decode_audio, decode_frames, ffmpeg_exe
    from bgmrec.media.extract import get_extractor
    from bgmrec.media.sample import AUDIO_RATE, synthesise_music

    torch.set_num_threads(args.threads)
    config = ExtractionConfig(torch_threads=args.threads, workers=args.threads, progress=False)
    tmp = Path(tempfile.mkdtemp(prefix="bench_extract_"))
    video = tmp / "ten_seconds.mp4"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30:duration=10",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", str(video)], check=True)
    music = tmp / "thirty_seconds.wav"
    sf.write(music, synthesise_music(0.5, 0.5, 0.5, 30.0, np.random.default_rng(0)), AUDIO_RATE)
    results: dict[str, dict[str, float]] = {"load_seconds": {}, "per_10s_video": {}, "per_30s_music": {},
                                             "text": {}}

    for kind in ("visual", "text", "audio_embedding", "audio_lld"):
        started = time.perf_counter()
        get_extractor(kind, config)
        results["load_seconds"][kind] = round(time.perf_counter() - started, 3)

    decode_s, frames = _timed(lambda: decode_frames(video, config.fps, config.frame_size, config.max_frames),
                              args.repeats)
    visual = get_extractor("visual", config)
    cnn_s, _ = _timed(lambda: visual.embed_video(frames), args.repeats)
    results["per_10s_video"] = {"frames": int(len(frames)), "decode_frames": decode_s,
                                f"{visual.name}@{config.frame_size}": cnn_s, "total": decode_s + cnn_s}
    for size in (160, 128):
        small = decode_frames(video, config.fps, size, config.max_frames)
        seconds, _ = _timed(lambda small=small: visual.embed_video(small), args.repeats)
        results["per_10s_video"][f"{visual.name}@{size} (option)"] = seconds

    descriptions = [f"video number {i}: a walk on the beach at sunset, calm and warm" for i in range(64)]
    text = get_extractor("text", config)
    text_s, _ = _timed(lambda: text.embed_texts(descriptions), args.repeats)
    results["text"] = {f"{text.name}_per_description": text_s / len(descriptions)}

    audio_s, signal = _timed(lambda: decode_audio(music, config.sample_rate, config.max_audio_seconds), args.repeats)
    per_music = {"decode_audio": audio_s}
    for kind in ("audio_embedding", "audio_lld"):
        extractor = get_extractor(kind, config)
        seconds, _ = _timed(lambda extractor=extractor: extractor.embed_audio(signal, config.sample_rate),
                            args.repeats)
        per_music[extractor.name] = seconds
    per_music["total"] = sum(per_music.values())
    results["per_30s_music"] = per_music

    rounded = {group: {k: round(v, 4) if isinstance(v, float) else v for k, v in values.items()}
               for group, values in results.items()}
    report = {
        "command": "python bench/bench_extract.py " + f"--repeats {args.repeats} --threads {args.threads}",
        "threads": args.threads, "cpu_count": os.cpu_count(), "machine": platform.machine(),
        "load_average_1m_5m_15m": [round(x, 2) for x in os.getloadavg()],
        "targets": {"per_10s_video_total": 1.0, "per_30s_music_total": 1.0},
        "config": config.to_dict(), **rounded,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
