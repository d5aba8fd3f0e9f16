"""Extraction speed with the default extractors on CPU: seconds per 10 s of video and per 30 s of music.

Two figures for each, because they answer different questions:
- single-item latency: one file through the single-file path (`embed_video_file` for an upload; decode + log-mel +
  openSMILE for a music clip), with the per-stage breakdown;
- batch throughput: `extract_dataset` (the path of `bgmrec extract`, `workers` threads) over N real files with a
  fresh cache, reported as wall seconds / N.

Targets with the default settings (docs/decisions/extraction-speed.md): <= 1 s per 10 s of video, <= 1 s per 30 s
of music, on 2 CPU cores. The load average and the CPU time other processes used during each measurement (from
/proc/stat) are recorded beside the figures. Never fails on timing.

    flock /tmp/bgmrec-cpu.lock .venv/bin/python bench/bench_extract.py     # writes bench/results/extract.json
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

ROOT = Path(__file__).resolve().parents[1]

# 10 s test videos at 640×360, 30 fps, H.264: FFmpeg lavfi sources with different content (decode cost differs).
VIDEO_SOURCES = (
    "testsrc2=size=640x360:rate=30",
    "mandelbrot=size=640x360:rate=30",
    "life=size=640x360:rate=30:mold=10:ratio=0.1:death_color=#C83232:life_color=#00ff00",
    "testsrc=size=640x360:rate=30",
    "smptebars=size=640x360:rate=30",
    "cellauto=size=640x360:rate=30",
    "rgbtestsrc=size=640x360:rate=30",
    "yuvtestsrc=size=640x360:rate=30",
)


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (FFmpeg), all threads."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (all processes, all cores), from /proc/stat."""
    with open("/proc/stat") as stat:
        ticks = [int(v) for v in stat.readline().split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def _measure(fn):
    """(wall s, own CPU s, CPU s used by other processes meanwhile, fn's result) of one call."""
    started, cpu, busy = time.perf_counter(), _cpu_seconds(), _busy_seconds()
    out = fn()
    wall, own = time.perf_counter() - started, _cpu_seconds() - cpu
    return wall, own, max(0.0, _busy_seconds() - busy - own), out


def _timed(fn, repeats: int) -> tuple[dict[str, float], object]:
    """Median wall and CPU seconds of `repeats` calls after one warm-up call (model loading is measured apart)."""
    out = fn()
    walls, cpus, others = [], [], []
    for _ in range(repeats):
        wall, cpu, other, out = _measure(fn)
        walls.append(wall)
        cpus.append(cpu)
        others.append(other)
    return {
        "wall_s": statistics.median(walls),
        "cpu_s": statistics.median(cpus),
        "wall_s_runs": walls,
        "other_processes_cpu_s": sum(others),
    }, out


def _total(parts: dict[str, dict[str, float]]) -> dict[str, float]:
    return {key: sum(p[key] for p in parts.values()) for key in ("wall_s", "cpu_s")}


def _make_media(tmp: Path, items: int) -> tuple[list[Path], list[Path]]:
    import soundfile as sf

    from bgmrec.media.decode import ffmpeg_exe
    from bgmrec.media.sample import AUDIO_RATE, synthesise_music

    videos, music = [], []
    for i in range(items):
        video = tmp / "videos" / f"video{i}.mp4"
        video.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i", VIDEO_SOURCES[i % len(VIDEO_SOURCES)],
                        "-t", "10", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(video)], check=True)
        videos.append(video)
        clip = tmp / "music" / f"music{i}.wav"
        clip.parent.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(i)
        sf.write(clip, synthesise_music(*rng.uniform(0, 1, 3), 30.0, rng), AUDIO_RATE)
        music.append(clip)
    return videos, music


def _batch_throughput(root: Path, videos: list[Path], music: list[Path], config, repeats: int) -> dict:
    """`extract_dataset` over the items with an empty cache each time: wall seconds per item, per kind."""
    import pandas as pd

    from bgmrec.data.contract import write_manifests
    from bgmrec.media.extract import extract_dataset

    music_table = pd.DataFrame({"music_id": [p.stem for p in music], "title": [p.stem for p in music],
                                "audio_path": [str(p.relative_to(root)) for p in music]})
    video_table = pd.DataFrame({"video_id": [p.stem for p in videos],
                                "music_id": [music[i % len(music)].stem for i in range(len(videos))],
                                "description": [f"clip {i}: a walk on the beach at sunset" for i in range(len(videos))],
                                "video_path": [str(p.relative_to(root)) for p in videos]})
    write_manifests(root, music_table, video_table)
    runs = []
    for repeat in range(repeats + 1):  # the first run is a warm-up (the text model loads lazily)
        run_config = type(config)(**{**config.to_dict(), "cache_dir": str(root / f"cache{repeat}")})
        wall, cpu, other, report = _measure(lambda run_config=run_config: extract_dataset(root, run_config))
        if not report.ok:
            raise RuntimeError(f"batch extraction failed: {report.failures}")
        runs.append({"wall_s": wall, "cpu_s": cpu, "other_processes_cpu_s": other,
                     "music_s": report.seconds["music"], "video_s": report.seconds["video"]})
    measured = runs[1:]
    music_s = statistics.median(r["music_s"] for r in measured)
    video_s = statistics.median(r["video_s"] for r in measured)
    return {
        "path": "extract_dataset (bgmrec extract) with an empty cache, workers = config.workers",
        "n_music": len(music), "n_videos": len(videos),
        "per_30s_music_wall_s": music_s / len(music),
        "per_10s_video_wall_s": video_s / len(videos),
        "note": "music seconds include decode, log-mel, openSMILE, the PCA fit and the parquet write; video "
                "seconds include decode, the CNN, the text of each description and the parquet write",
        "runs": measured,
    }


app = typer.Typer(add_completion=False, help=__doc__, rich_markup_mode=None, pretty_exceptions_enable=False)


@app.command()
def main(
    repeats: Annotated[int, typer.Option(min=1, help="timed calls per figure after a warm-up (median kept)")] = 3,
    items: Annotated[int, typer.Option(min=2, help="music clips and videos in the batch (the PCA needs 2)")] = 8,
    threads: Annotated[int, typer.Option(min=1, help="torch threads and extraction workers (target: 2 cores)")] = 2,
    out: Annotated[Path, typer.Option(help="the JSON results file")] = ROOT / "bench" / "results" / "extract.json",
) -> None:
    """Measure single-item latency and batch throughput of extraction and write the figures to OUT."""
    import torch

    from bgmrec.media.config import ExtractionConfig
    from bgmrec.media.decode import decode_audio, decode_frames
    from bgmrec.media.extract import _music_item, embed_video_file, get_extractor

    load_before = [round(x, 2) for x in os.getloadavg()]
    torch.set_num_threads(threads)
    config = ExtractionConfig(torch_threads=threads, workers=threads, progress=False)
    workdir = tempfile.TemporaryDirectory(prefix="bench_extract_")  # media and caches, removed at the end
    tmp = Path(workdir.name)
    videos, music = _make_media(tmp, items)
    video, clip = videos[0], music[0]  # testsrc2 and a 30 s clip: the single-item media
    results: dict[str, dict] = {"load_seconds": {}}

    for kind in ("visual", "text", "audio_embedding", "audio_lld"):
        started = time.perf_counter()
        get_extractor(kind, config)
        results["load_seconds"][kind] = round(time.perf_counter() - started, 3)

    decode_s, frames = _timed(lambda: decode_frames(video, config.fps, config.frame_size, config.max_frames),
                              repeats)
    visual = get_extractor("visual", config)
    cnn_s, _ = _timed(lambda: visual.embed_video(frames), repeats)
    parts = {"decode_frames": decode_s, f"{visual.name}@{config.frame_size}": cnn_s}
    upload_s, _ = _timed(lambda: embed_video_file(video, None, config), repeats)
    small = decode_frames(video, config.fps, 160, config.max_frames)
    option_s, _ = _timed(lambda: visual.embed_video(small), repeats)
    results["per_10s_video"] = {"frames": len(frames), "batch_size": config.batch_size, **parts,
                                "sum_of_stages": _total(parts), "embed_video_file": upload_s,
                                "option_not_default": {f"{visual.name}@160": option_s}}

    descriptions = [f"video number {i}: a walk on the beach at sunset, calm and warm" for i in range(64)]
    text = get_extractor("text", config)
    text_s, _ = _timed(lambda: text.embed_texts(descriptions), repeats)
    results["text_per_description"] = {text.name: {k: v / len(descriptions) for k, v in text_s.items()
                                                   if k in ("wall_s", "cpu_s")}}

    audio_s, signal = _timed(lambda: decode_audio(clip, config.sample_rate, config.max_audio_seconds), repeats)
    parts = {"decode_audio": audio_s}
    for kind in ("audio_embedding", "audio_lld"):
        extractor = get_extractor(kind, config)
        parts[extractor.name], _ = _timed(
            lambda extractor=extractor: extractor.embed_audio(signal, config.sample_rate), repeats
        )
    item_s, _ = _timed(lambda: _music_item(clip, config, None), repeats)
    results["per_30s_music"] = {**parts, "sum_of_stages": _total(parts), "one_clip_end_to_end": item_s}

    results["one_at_a_time_over_the_batch_media"] = {
        "note": "each batch file once through the single-item path, one after the other: mean wall s per file",
        "per_10s_video_wall_s": statistics.mean(_measure(lambda v=v: embed_video_file(v, None, config))[0]
                                                for v in videos),
        "per_30s_music_wall_s": statistics.mean(_measure(lambda c=c: _music_item(c, config, None))[0] for c in music),
    }
    results["batch_throughput"] = _batch_throughput(tmp, videos, music, config, repeats)

    def rounded(value):
        if isinstance(value, dict):
            return {k: rounded(v) for k, v in value.items()}
        if isinstance(value, list):
            return [rounded(v) for v in value]
        return round(value, 4) if isinstance(value, float) else value

    report = {
        "command": "python bench/bench_extract.py "
                   + f"--repeats {repeats} --items {items} --threads {threads}",
        "threads": threads, "cpu_count": os.cpu_count(), "machine": platform.machine(),
        "load_average_1m_5m_15m": {"before": load_before, "after": [round(x, 2) for x in os.getloadavg()]},
        "targets_wall_s": {"per_10s_video": 1.0, "per_30s_music": 1.0},
        "note": "single-item figures: median of `repeats` calls after a warm-up; per_10s_video.embed_video_file and "
                "per_30s_music.one_clip_end_to_end are the latency of one file; batch_throughput is wall / N over "
                "N files through extract_dataset. other_processes_cpu_s: CPU time the rest of the machine used "
                "during the measured calls (0 on a quiet machine)",
        "config": config.to_dict(), **rounded(results),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    workdir.cleanup()


if __name__ == "__main__":
    app()
