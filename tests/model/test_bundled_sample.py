"""The bundled sample (params.yaml `sample_media:`) is big enough for its metrics to mean something, and the gate's
thresholds sit above what a random ranker scores on it. The sample is planned, not rendered: manifests and splits
only, so these run in seconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bgmrec.config import load_config
from bgmrec.data.contract import Dataset, load_dataset, write_manifests
from bgmrec.data.splits import Split, make_split
from bgmrec.media.sample import plan_sample
from bgmrec.metrics import FULL_KS, IPS_KS

pytestmark = pytest.mark.model

ROOT = Path(__file__).resolve().parents[2]
# a threshold must be at least this many times a random ranker's expected value
RANDOM_MARGIN = 2.0


@pytest.fixture(scope="module")
def bundled(tmp_path_factory) -> tuple[Dataset, dict[str, Split], dict[str, float]]:
    """The bundled sample's dataset (manifests only), its weak and strong splits, and the gate's thresholds."""
    config = load_config(ROOT / "params.yaml")
    plan = plan_sample(config.sample)
    root = tmp_path_factory.mktemp("bundled_sample")
    write_manifests(root, plan.music, plan.videos)
    dataset = load_dataset(root, require_features=False)
    splits = {kind: make_split(dataset, kind, config.data.seed) for kind in ("weak", "strong")}
    return dataset, splits, config.gate.thresholds


def random_recall(metric: str, split: Split, dataset: Dataset) -> float:
    """A random ranker's expected value of `recall@K` (K / gallery size) or `ips_recall@K` (K / candidates) on the
    test part of a split."""
    k = int(metric.split("@")[1])
    if metric.startswith("ips_recall@"):
        candidates = 1 + min(len(split.negatives[i]) for i in split.index("test"))
    else:
        candidates = len(split.gallery(dataset, "test"))
    return min(1.0, k / candidates)


@pytest.mark.unit
def test_the_strong_test_gallery_is_larger_than_every_k(bundled):
    dataset, splits, _ = bundled
    gallery = splits["strong"].gallery(dataset, "test")
    assert len(gallery) > max(*FULL_KS, *IPS_KS), f"strong test gallery has {len(gallery)} music"
    for metric in [f"recall@{k}" for k in FULL_KS] + [f"ips_recall@{k}" for k in IPS_KS]:
        for kind, split in splits.items():
            assert random_recall(metric, split, dataset) < 1.0, f"{kind}.{metric} is 1 by construction"


@pytest.mark.unit
def test_both_splits_have_enough_test_videos_for_a_figure_to_move_by_a_percent_or_less(bundled):
    _, splits, _ = bundled
    for kind, split in splits.items():
        assert len(split.index("test")) >= 100, f"{kind}: {len(split.index('test'))} test videos"
        assert len(split.index("val")) >= 50, f"{kind}: {len(split.index('val'))} validation videos"


@pytest.mark.unit
def test_every_gate_threshold_is_well_above_a_random_ranker_and_one_is_on_the_strong_split(bundled):
    dataset, splits, thresholds = bundled
    assert any(name.startswith("strong.") for name in thresholds), "no strong-split metric is gated"
    for name, threshold in thresholds.items():
        kind, metric = name.split(".", 1)
        chance = random_recall(metric, splits[kind], dataset)
        assert RANDOM_MARGIN * chance <= threshold < 1.0, f"gate.thresholds.{name} = {threshold}, random {chance:.3f}"


@pytest.mark.unit
def test_off_topic_videos_show_random_factors_and_the_jitter_has_the_asked_spread():
    exact = plan_sample({"n_music": 50, "n_videos": 1000, "visual_noise": 0.0, "off_topic_fraction": 0.2})
    music = np.stack([exact.latent[f] for f in ("pitch", "tempo", "timbre")], axis=1)
    owner = exact.videos["music_id"].str[1:].astype(int).to_numpy()
    off_topic = (exact.video_factors != music[owner]).any(axis=1)
    assert 0.15 < off_topic.mean() < 0.25

    on_topic = plan_sample({"n_music": 50, "n_videos": 1000, "visual_noise": 0.05, "off_topic_fraction": 0.0})
    jitter = on_topic.video_factors - music[owner]
    assert np.std(jitter) == pytest.approx(0.05, rel=0.1)


@pytest.mark.unit
def test_a_knob_changes_only_its_own_draws():
    base = plan_sample({"n_music": 20, "n_videos": 100, "visual_noise": 0.0})
    noisy = plan_sample({"n_music": 20, "n_videos": 100, "visual_noise": 0.1})
    assert base.videos.equals(noisy.videos)
    np.testing.assert_array_equal(base.video_seconds, noisy.video_seconds)
    np.testing.assert_array_equal(base.music_seconds, noisy.music_seconds)
    assert not np.array_equal(base.video_factors, noisy.video_factors)


@pytest.mark.unit
@pytest.mark.parametrize(("knob", "value"), [("visual_noise", -0.1), ("off_topic_fraction", 1.5)])
def test_an_out_of_range_knob_is_refused_by_name(knob, value):
    with pytest.raises(ValueError, match=f"sample_media: {knob} is {value}"):
        plan_sample({knob: value})
