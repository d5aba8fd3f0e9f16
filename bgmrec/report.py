"""The recommendations report: what the model recommends for a few test videos, to look at and listen to.

Like CMVAE's Fig. 5 and VMCML's Fig. 4, for a handful of test videos of a split (picked with the split seed):
a few frames and the description, the top-k music with titles, cosine scores and an audio preview, and the rank
of the music the creator actually chose among the whole catalog. Beside them, each model's Recall@K curves from
the evaluation's metrics JSON (full gallery, VMCML eq. 7; IPS, CMVAE eqs. 14-15) and the diversity of the model's
top-k lists over the split's test videos (bgmrec.metrics.diversity). One self-contained HTML file: frames are
inlined JPEGs, previews inlined MP3s (bgmrec.previews), charts inline SVG; it needs no network and no script.

The model is the registry's production model with the served catalog (what users get), or a checkpoint with
the dataset's music embedded by its music encoder (a candidate, e.g. in the training pipeline).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bgmrec.previews import PreviewSettings, encode_preview, music_audio_paths, preview_file, previews_dir
from bgmrec.report_html import ListedMusic, ReportContent, VideoShowcase, render_report

if TYPE_CHECKING:
    from bgmrec.catalog import MusicCatalog
    from bgmrec.data.contract import Dataset
    from bgmrec.models.base import TorchRecommender

FRAME_SIZE = 160
FRAME_QUALITY = 70
# Diversity is measured on at most this many test videos' lists (a random subset, seeded), so a large test set
# does not make the report slow.
MAX_DIVERSITY_VIDEOS = 5000
SEARCH_CHUNK = 256


class PreviewSource:
    """Previews of music by id: the file beside the catalog when there is one, else encoded from the dataset's
    audio file; each music is read or encoded once."""

    def __init__(self, dataset_dir: Path, catalog_previews: Path | None, settings: PreviewSettings):
        self.audio = music_audio_paths(dataset_dir)
        self.catalog_previews = catalog_previews
        self.settings = settings
        self._done: dict[str, tuple[bytes | None, str]] = {}

    def get(self, music_id: str) -> tuple[bytes | None, str]:
        """(MP3 bytes, "") or (None, why there is no preview)."""
        if music_id not in self._done:
            self._done[music_id] = self._load(music_id)
        return self._done[music_id]

    def _load(self, music_id: str) -> tuple[bytes | None, str]:
        if self.catalog_previews is not None:
            written = preview_file(self.catalog_previews, music_id)
            if written.is_file():
                return written.read_bytes(), ""
        source = self.audio.get(music_id)
        if source is None:
            return None, "no audio file in the dataset"
        try:
            return encode_preview(source, self.settings), ""
        except ValueError as exc:  # MediaError: names the file and the problem
            return None, str(exc)


def read_metrics(metrics: Mapping[str, str | Path]) -> dict[str, dict[str, dict[str, float]]]:
    """{model: {split kind: {metric: value}}} from each model's metrics JSON (`bgmrec evaluate --out`)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for model, path in metrics.items():
        try:
            nested = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"metrics of {model}: {path} does not exist; run `bgmrec evaluate` first") from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"metrics of {model}: {path} is not valid JSON ({exc})") from None
        if not isinstance(nested, dict) or not all(isinstance(v, dict) for v in nested.values()):
            raise ValueError(f"metrics of {model}: {path} is not {{split kind: {{metric: value}}}}")
        out[model] = {kind: {name: float(value) for name, value in values.items()
                             if isinstance(value, int | float) and not isinstance(value, bool)}
                      for kind, values in nested.items()}
    return out


def load_model_and_catalog(
    dataset: Dataset, registry_dir: str | Path | None, checkpoint: str | Path | None
) -> tuple[TorchRecommender, MusicCatalog, str, str, Path | None]:
    """(model, catalog, model label, where they come from, the catalog's previews directory or None)."""
    from bgmrec.catalog import CatalogError, build_catalog, load_catalog, require_catalog
    from bgmrec.models import load_model
    from bgmrec.registry import ModelRegistry

    if (registry_dir is None) == (checkpoint is None):
        raise ValueError("the report needs exactly one of a registry (its production model and catalog) or a "
                         "checkpoint")
    if checkpoint is not None:
        model = load_model(checkpoint)
        assert dataset.music_vectors is not None
        titles = (dataset.music.set_index("music_id")["title"].reindex([str(i) for i in dataset.music_vectors.ids])
                  .tolist() if "title" in dataset.music else None)
        catalog = build_catalog(model, dataset.music_vectors, titles=titles, popularity=dataset.popularity)
        return model, catalog, model.name, f"checkpoint {checkpoint}, the dataset's music as catalog", None
    registry = ModelRegistry(registry_dir)
    record = registry.require_production()
    catalog_path = require_catalog(registry.root)
    catalog = load_catalog(catalog_path)
    if catalog.model_version and catalog.model_version != record["version"]:
        raise CatalogError(f"{catalog_path} was embedded by model {catalog.model_version} but production is "
                           f"{record['version']}; run `bgmrec build-catalog` again")
    label = f"{record['model_name']} {record['version']}"
    return (registry.load_production(), catalog, label, f"production model and catalog of {registry.root}",
            previews_dir(registry.root))


def top_k_lists(catalog: MusicCatalog, queries: np.ndarray, k: int) -> np.ndarray:
    """(videos, k) catalog rows of each query's top k, best first (the served ranking, no options)."""
    rows = []
    for start in range(0, len(queries), SEARCH_CHUNK):
        chunk = queries[start:start + SEARCH_CHUNK]
        for ranked in catalog.top_k_many(chunk, [k] * len(chunk), [[]] * len(chunk), [1.0] * len(chunk),
                                         [0.0] * len(chunk)):
            if isinstance(ranked, Exception):
                raise ranked
            rows.append(ranked.index)
    return np.stack(rows).astype(np.int64)


def video_frames(dataset: Dataset, row: int, count: int) -> tuple[list[bytes], str]:
    """`count` frames spread over one video as JPEG bytes, or ([], why there are none)."""
    import io

    import pandas as pd
    from PIL import Image

    from bgmrec.media.decode import decode_frames
    from bgmrec.media.extract import resolve_media_path

    relative = dataset.videos["video_path"].iloc[row] if "video_path" in dataset.videos else None
    if relative is None or pd.isna(relative) or not str(relative).strip():
        return [], "no video file in the dataset"
    try:
        frames = decode_frames(resolve_media_path(dataset.root, relative), 3.0, FRAME_SIZE, 48)
    except ValueError as exc:  # MediaError: names the file and the problem
        return [], str(exc)
    picked = np.unique(np.linspace(0, len(frames) - 1, num=min(count, len(frames))).round().astype(int))
    out = []
    for i in picked:
        buffer = io.BytesIO()
        Image.fromarray(frames[i]).save(buffer, "JPEG", quality=FRAME_QUALITY)
        out.append(buffer.getvalue())
    return out, ""


def _listed(catalog: MusicCatalog, row: int, rank: int, score: float, is_true: bool,
            previews: PreviewSource) -> ListedMusic:
    music_id = str(catalog.ids[row])
    preview, note = previews.get(music_id)
    return ListedMusic(rank, music_id, str(catalog.titles[row]), float(score), is_true, preview, note)


def report_step(
    dataset_dir: str | Path,
    out_html: str | Path,
    *,
    registry_dir: str | Path | None = None,
    checkpoint: str | Path | None = None,
    metrics: Mapping[str, str | Path] | None = None,
    split_kind: str = "weak",
    n_videos: int = 6,
    k: int = 10,
    seed: int = 0,
    frames_per_video: int = 4,
    preview: PreviewSettings | None = None,
) -> dict[str, Any]:
    """Write the recommendations report of the production model (`registry_dir`) or of a `checkpoint` to
    OUT_HTML, with each model's Recall@K curves from `metrics` ({model: metrics JSON}). Returns a summary."""
    import pandas as pd

    from bgmrec.data.contract import load_dataset
    from bgmrec.data.splits import load_or_make_split
    from bgmrec.metrics import diversity
    from bgmrec.previews import write_atomically

    if n_videos < 1 or k < 1 or frames_per_video < 0:
        raise ValueError(f"report: n_videos={n_videos} and k={k} must be >= 1, frames_per_video="
                         f"{frames_per_video} >= 0")
    recall = read_metrics(metrics or {})
    dataset = load_dataset(dataset_dir)
    model, catalog, label, source, catalog_previews = load_model_and_catalog(dataset, registry_dir, checkpoint)
    k = min(k, len(catalog))
    test_rows = load_or_make_split(dataset, split_kind, seed).index("test")
    if len(test_rows) == 0:
        raise ValueError(f"{dataset_dir}: the {split_kind} split has no test videos to show")
    assert dataset.video_vectors is not None
    videos = dataset.video_vectors.subset(test_rows)
    queries = model.embed_videos(videos.visual, videos.text, videos.has_text)
    rng = np.random.default_rng(seed)
    measured = np.arange(len(test_rows))
    if len(measured) > MAX_DIVERSITY_VIDEOS:
        measured = np.sort(rng.choice(measured, MAX_DIVERSITY_VIDEOS, replace=False))
    lists = top_k_lists(catalog, queries[measured], k)
    spread = diversity(lists, len(catalog), catalog.popularity, catalog.embeddings, catalog.is_new)

    previews = PreviewSource(Path(dataset_dir), catalog_previews, preview or PreviewSettings())
    music_ids = dataset.music["music_id"].astype(str).to_numpy()
    shown = []
    for position in np.sort(rng.choice(len(test_rows), min(n_videos, len(test_rows)), replace=False)):
        row = int(test_rows[position])
        query = queries[position]
        scores = catalog.embeddings @ query
        ranked = top_k_lists(catalog, query[None, :], k)[0]
        chosen_row = int(catalog.indices_of([music_ids[dataset.video_music_index[row]]])[0])
        if chosen_row < 0:
            raise ValueError(f"video {dataset.videos['video_id'].iloc[row]}: its music "
                             f"{music_ids[dataset.video_music_index[row]]} is not in the catalog")
        chosen_rank = 1 + int((scores > scores[chosen_row]).sum())
        items = [_listed(catalog, int(r), rank, scores[r], int(r) == chosen_row, previews)
                 for rank, r in enumerate(ranked, 1)]
        frames, frames_note = video_frames(dataset, row, frames_per_video)
        description = dataset.videos["description"].iloc[row] if "description" in dataset.videos else None
        shown.append(VideoShowcase(
            str(dataset.videos["video_id"].iloc[row]), None if pd.isna(description) else str(description),
            frames, frames_note, items,
            _listed(catalog, chosen_row, chosen_rank, scores[chosen_row], True, previews),
        ))
    notes = ([f"Diversity is measured on {len(measured)} test videos picked at random among {len(test_rows)}."]
             if len(measured) < len(test_rows) else [])
    content = ReportContent(label, source, str(dataset_dir), split_kind, len(catalog), k, shown, recall,
                            spread, len(measured), notes)
    html = render_report(content)
    out = Path(out_html)
    write_atomically(out, html.encode("utf-8"))
    listed = [item for video in shown
              for item in video.items + ([] if any(i.is_true for i in video.items) else [video.chosen])]
    return {"report": str(out), "bytes": out.stat().st_size, "model": label, "videos": len(shown), "k": k,
            "catalog_size": len(catalog), "players": sum(item.preview is not None for item in listed),
            "without_preview": sorted({item.music_id for item in listed if item.preview is None}),
            "chosen_ranks": [video.chosen.rank for video in shown],
            "shown": [{"video_id": video.video_id, "chosen": video.chosen.music_id, "rank": video.chosen.rank,
                       "listed": [item.music_id for item in video.items]} for video in shown],
            "diversity": spread,
            "recall_models": sorted(recall)}
