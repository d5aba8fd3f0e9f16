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


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (FFmpeg), all threads: independent of other load."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _timed(fn, repeats: int) -> tuple[dict[str, float], object]:
    """Median wall and CPU seconds of `repeats` calls after one warm-up call (model loading is measured apart)."""
    out = fn()
    walls, cpus = [], []
    for _ in range(repeats):
        started, cpu = time.perf_counter(), _cpu_seconds()
        out = fn()
        walls.append(time.perf_counter() - started)
        cpus.append(_cpu_seconds() - cpu)
    return {"wall_s": statistics.median(walls), "cpu_s": statistics.median(cpus)}, out


def _total(parts: dict[str, dict[str, float]]) -> dict[str, float]:
    return {key: sum(p[key] for p in parts.values()) for key in ("wall_s", "cpu_s")}


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
    results: dict[str, dict] = {"load_seconds": {}}

    for kind in ("visual", "text", "audio_embedding", "audio_lld"):
        started = time.perf_counter()
        get_extractor(kind, config)
        results["load_seconds"][kind] = round(time.perf_counter() - started, 3)

    decode_s, frames = _timed(lambda: decode_frames(video, config.fps, config.frame_size, config.max_frames),
                              args.repeats)
    visual = get_extractor("visual", config)
    cnn_s, _ = _timed(lambda: visual.embed_video(frames), args.repeats)
    parts = {"decode_frames": decode_s, f"{visual.name}@{config.frame_size}": cnn_s}
    options = {}
    for size in (160, 128):
        small = decode_frames(video, config.fps, size, config.max_frames)
        options[f"{visual.name}@{size}"], _ = _timed(lambda small=small: visual.embed_video(small), args.repeats)
    results["per_10s_video"] = {"frames": len(frames), **parts, "total": _total(parts),
                                "smaller_frames_option": options}

    descriptions = [f"video number {i}: a walk on the beach at sunset, calm and warm" for i in range(64)]
    text = get_extractor("text", config)
    text_s, _ = _timed(lambda: text.embed_texts(descriptions), args.repeats)
    results["text_per_description"] = {text.name: {k: v / len(descriptions) for k, v in text_s.items()}}

    audio_s, signal = _timed(lambda: decode_audio(music, config.sample_rate, config.max_audio_seconds), args.repeats)
    parts = {"decode_audio": audio_s}
    for kind in ("audio_embedding", "audio_lld"):
        extractor = get_extractor(kind, config)
        parts[extractor.name], _ = _timed(
            lambda extractor=extractor: extractor.embed_audio(signal, config.sample_rate), args.repeats
        )
    results["per_30s_music"] = {**parts, "total": _total(parts)}

    def rounded(value):
        if isinstance(value, dict):
            return {k: rounded(v) for k, v in value.items()}
        return round(value, 4) if isinstance(value, float) else value

    report = {
        "command": "python bench/bench_extract.py " + f"--repeats {args.repeats} --threads {args.threads}",
        "threads": args.threads, "cpu_count": os.cpu_count(), "machine": platform.machine(),
        "load_average_1m_5m_15m": [round(x, 2) for x in os.getloadavg()],
        "targets_wall_s": {"per_10s_video_total": 1.0, "per_30s_music_total": 1.0},
        "note": "wall_s depends on the other load on the machine (see load average); cpu_s is the CPU time spent "
                "(all threads + FFmpeg): on an idle 2-core machine, wall ≈ cpu_s / 2 for the parallel parts",
        "config": config.to_dict(), **rounded(results),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
