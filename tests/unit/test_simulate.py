"""The simulator's presets (the papers' counts), its knobs and VMCML's seen-unseen split."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from bgmrec.cli import app
from bgmrec.data.contract import load_dataset
from bgmrec.data.presets import PRESETS
from bgmrec.data.seen_unseen import SEEN_RATIOS, fractional_assign
from bgmrec.data.simulate import music_centres, music_plan, preset_config, simulate
from bgmrec.data.splits import make_split
from bgmrec.evaluate import evaluate
from bgmrec.models import create_model
from bgmrec.models.base import TrainingData
from bgmrec.train import fit

SMALL_DIMS = {"visual": 32, "text": 16, "audio_embedding": 16, "audio_lld": 16}


def _r2(target: np.ndarray, predictors: np.ndarray) -> float:
    """Share of the target's variance a least-squares linear map of the predictors explains."""
    x = np.column_stack([predictors, np.ones(len(predictors))])
    residual = target - x @ np.linalg.lstsq(x, target, rcond=None)[0]
    return float(1 - residual.var(0).sum() / target.var(0).sum())


@pytest.mark.unit
def test_tt150k_preset_has_cmvae_table_1_counts():
    counts, unseen = music_plan(PRESETS["tt150k"], np.random.default_rng(0))
    assert len(counts) == 3003 and not unseen.any()
    assert counts.sum() == pytest.approx(146351, rel=0.002)


@pytest.mark.unit
def test_msvd_preset_has_vmcml_table_1_counts():
    counts, unseen = music_plan(PRESETS["msvd"], np.random.default_rng(0))
    assert len(counts) == 390
    assert unseen.sum() == 125 and (~unseen).sum() == 265
    assert (counts[~unseen] == 500).all() and (counts[unseen] == 140).all()
    assert counts.sum() == 150000  # "about 150,000 video-music samples"
    # 500 videos of a seen music split 20:1:4 (section 4.1; Table 1: 400 / 20 / 80 per music)
    labels = fractional_assign(500, np.random.default_rng(0), SEEN_RATIOS)
    assert np.bincount(labels).tolist() == [400, 20, 80]


@pytest.mark.unit
def test_scale_reduces_videos_but_keeps_music_and_knobs():
    full, reduced = preset_config("msvd"), preset_config("msvd", scale=0.1)
    assert (reduced.videos_per_music, reduced.unseen_videos_per_music) == (50, 14)
    assert (reduced.n_music, reduced.n_unseen_music) == (full.n_music, full.n_unseen_music)
    assert (reduced.video_noise, reduced.usage_share) == (full.video_noise, full.usage_share)
    counts, _ = music_plan(preset_config("tt150k", scale=0.25), np.random.default_rng(0))
    assert len(counts) == 3003 and counts.sum() == pytest.approx(146351 * 0.25, rel=0.01)


@pytest.mark.unit
def test_unknown_preset_or_knob_is_named():
    with pytest.raises(ValueError, match="unknown preset 'tt15k'"):
        preset_config("tt15k")
    with pytest.raises(ValueError, match="unknown knob.*snr"):
        preset_config("tt150k", knobs={"snr": 1.0})


@pytest.mark.integration
def test_msvd_seen_unseen_split_follows_the_paper(tmp_path):
    simulate("msvd", 0, tmp_path, dims=SMALL_DIMS, scale=0.05)  # 25 videos per seen music, 7 per unseen
    ds = load_dataset(tmp_path)
    assert ds.music["music_set"].value_counts().to_dict() == {"seen": 265, "unseen": 125}
    split = make_split(ds, "seen-unseen", seed=0)
    frame = pd.DataFrame({"music": ds.video_music_index, "part": split.part})
    seen_music = np.flatnonzero(ds.music["music_set"].to_numpy() == "seen")
    per_music = frame[frame.part != "unseen"].groupby(["music", "part"]).size().unstack()
    assert sorted(per_music.index) == seen_music.tolist()
    assert (per_music[["train", "val", "test"]] == [20, 1, 4]).all().all()
    unseen_music = frame[frame.part == "unseen"].music.unique()
    assert len(unseen_music) == 125 and not set(unseen_music) & set(seen_music)
    assert (frame[frame.part == "unseen"].groupby("music").size() == 7).all()
    # each part ranks its own music set, in full: Random R@10 = 10/265 seen, 10/125 unseen (VMCML Table 2)
    assert len(split.gallery(ds, "test")) == 265 and len(split.gallery(ds, "unseen")) == 125
    for i in split.index("unseen")[:50]:
        assert set(split.negatives[i]) <= set(unseen_music)


@pytest.mark.integration
def test_oracle_beats_random_and_stays_at_most_0_7_on_scaled_tt150k(tmp_path):
    # the oracle scores the latents, so narrow feature vectors measure the same ceiling as the preset's widths
    simulate("tt150k", 0, tmp_path, dims=SMALL_DIMS, scale=0.1)
    ds = load_dataset(tmp_path)
    split = make_split(ds, "weak", seed=0)
    data = TrainingData(ds, split, 0)
    scores = {}
    for name in ("oracle", "random"):
        model = create_model(name)
        fit(model, data)
        scores[name] = evaluate(model, ds, split, "test")["ips_recall@10"]
    assert scores["random"] == pytest.approx(10 / 101, abs=0.03)
    assert scores["random"] + 0.3 < scores["oracle"] <= 0.7


@pytest.mark.unit
def test_asymmetry_makes_the_video_side_a_lossy_function_of_the_music():
    rng = np.random.default_rng(0)
    style = rng.standard_normal((4000, 12)).astype(np.float32)
    symmetric = music_centres(preset_config("tt150k", knobs={"usage_share": 0.0, "asymmetry": 0.0}), style, rng)
    lossy = music_centres(preset_config("tt150k", knobs={"usage_share": 0.0, "asymmetry": 1.0}), style, rng)
    # a = 0: the videos respond to the audible style itself (the old z_v = z_m + noise)
    np.testing.assert_allclose(symmetric, (style - style.mean(0)) / style.std(0), atol=1e-4)
    # a = 1: a nonlinear function of half the style's directions; the other half is invisible to videos
    assert _r2(style, lossy) < 0.6
    assert _r2(lossy, style) < 0.6
    # what it must not change: the centres' spread, so the oracle's ceiling is set by video_noise alone
    np.testing.assert_allclose(lossy.std(0), 1.0, atol=1e-3)


@pytest.mark.unit
def test_usage_share_is_the_part_of_the_video_side_the_audio_cannot_explain():
    rng = np.random.default_rng(0)
    style = rng.standard_normal((4000, 12)).astype(np.float32)
    for rho in (0.0, 0.3, 0.7):
        centre = music_centres(preset_config("tt150k", knobs={"usage_share": rho, "asymmetry": 0.0}), style, rng)
        assert _r2(centre, style) == pytest.approx(1 - rho, abs=0.03)


@pytest.mark.integration
def test_simulate_command_writes_the_msvd_music_sets_and_the_knobs(tmp_path):
    out = tmp_path / "msvd"
    args = ["simulate", "--preset", "msvd", "--scale", "0.02", "--knob", "video_noise=1.5", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    ds = load_dataset(out)
    assert (ds.music["music_set"] == "unseen").sum() == 125
    assert (out / "oracle.npz").exists()
    bad = CliRunner().invoke(app, ["simulate", "--knob", "video_noise", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 1 and "expected NAME=VALUE" in bad.output


@pytest.mark.integration
def test_vmcml_table_2_protocol_on_a_small_msvd(tmp_path):
    """One visual-only VMCML trained on the seen music, evaluated on both galleries (VMCML Table 2)."""
    from bgmrec.benchmark import run_benchmark

    simulate("msvd", 0, tmp_path, dims=SMALL_DIMS, scale=0.05)
    params = {"vmcml": {"video_text": False, "epochs": 1, "progress": False}}
    bench = run_benchmark(tmp_path, "seen-unseen", ["random", "vmcml"], 0, params, log=lambda _: None)
    rows = bench["results"]
    assert {"vmcml", "vmcml:unseen", "random:unseen", "oracle", "oracle:unseen"} <= set(rows)
    assert rows["vmcml"]["gallery_size"] == 265 and rows["vmcml:unseen"]["gallery_size"] == 125
    assert rows["vmcml:unseen"]["n_videos"] == 125 * 7
    assert rows["random:unseen"]["recall@10"] == pytest.approx(10 / 125, abs=0.03)
    assert rows["oracle:unseen"]["fraction_of_oracle"]["recall@10"] == 1.0
    # the paper's video encoder sees the frames only: a description changes nothing
    model = create_model("vmcml", {"video_text": False, "epochs": 1, "progress": False})
    ds = load_dataset(tmp_path)
    fit(model, TrainingData(ds, make_split(ds, "seen-unseen", seed=0), 0))
    vv = ds.video_vectors.subset(np.flatnonzero(ds.video_vectors.has_text)[:20])
    np.testing.assert_array_equal(model.embed_videos(vv.visual, vv.text, vv.has_text), model.embed_videos(vv.visual))


@pytest.mark.unit
def test_a_new_simulation_drops_the_splits_of_the_one_it_replaces(tmp_path):
    from bgmrec.data.splits import load_or_make_split, split_path

    simulate("tiny", 0, tmp_path)
    load_or_make_split(load_dataset(tmp_path), "weak")
    simulate("tiny", 0, tmp_path, scale=2.0)  # other video ids: the saved split would not fit
    assert not split_path(tmp_path, "weak").exists()
    assert len(load_or_make_split(load_dataset(tmp_path), "weak").part) == len(load_dataset(tmp_path).videos)
