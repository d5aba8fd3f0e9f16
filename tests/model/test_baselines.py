"""The CMVAE Table 2 baselines CBVMR, DSCMR, UWML, Dual-VAE, DA-VAE and Cross-VAE: loss terms by hand, a short fit
that must rank training videos' music above chance, checkpoints, shapes and missing text."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bgmrec.data.contract import load_dataset
from bgmrec.data.splits import load_or_make_split
from bgmrec.metrics import recall_at_k
from bgmrec.models import available_models, create_model, load_model
from bgmrec.models.base import TorchRecommender, TrainingData
from bgmrec.models.two_branch import (
    CBVMR,
    hardest_negative_hinge,
    label_likelihood_loss,
    polynomial_loss,
    soft_structure_loss,
)
from bgmrec.models.vae_baselines import batch_entropy
from bgmrec.train import fit, training_tensors

pytestmark = pytest.mark.model

BASELINES = ("cbvmr", "dscmr", "uwml", "dual-vae", "da-vae", "cross-vae")
LOOP = {"epochs": 6, "patience": 6, "progress": False, "batch_size": 64, "lr": 3e-3}
SMALL = {
    "cbvmr": {"embedding_dim": 32, "video_hidden": [64], "music_hidden": [64]},
    "dscmr": {"embedding_dim": 32, "video_hidden": [64], "music_hidden": [64]},
    "uwml": {"embedding_dim": 32, "video_hidden": [64], "music_hidden": [64]},
    "dual-vae": {"latent_dim": 16, "hidden": 64},
    "da-vae": {"latent_dim": 16, "hidden": 64},
    "cross-vae": {"latent_dim": 16, "hidden": 64},
}


@pytest.fixture(scope="module")
def weak_data(tiny_dataset) -> TrainingData:
    dataset = load_dataset(tiny_dataset)
    return TrainingData(dataset, load_or_make_split(dataset, "weak", 0), 0)


@pytest.fixture(scope="module")
def trained(weak_data) -> dict[str, TorchRecommender]:
    models = {}
    for name in BASELINES:
        model = create_model(name, {**LOOP, **SMALL[name]})
        fit(model, weak_data)
        models[name] = model
    return models


def test_the_model_table_names_every_baseline_and_the_cmvbr_alias():
    assert set(BASELINES) | {"cmvbr"} <= set(available_models())
    alias = create_model("cmvbr")
    assert isinstance(alias, CBVMR) and alias.name == "cmvbr"


def test_hardest_negative_hinge_by_hand():
    # rows are anchors, k = 2, margin 0.2, hinge [0.2 − s(hardest positive) + s(negative)]+
    # row 0: positives 0.9, 0.6 → hardest 0.6; negatives 0.5 → 0.1, 0.1 → 0
    # row 1: positives 0.9, 0.0 → hardest 0.0; negatives 0.8 → 1.0, 0.3 → 0.5
    # mean over the 2 × 2 terms = (0.1 + 0 + 1.0 + 0.5) / 4 = 0.4
    similarity = torch.tensor([[0.9, 0.6, 0.5, 0.1], [0.8, 0.3, 0.9, 0.0]])
    same = torch.tensor([[True, True, False, False], [False, False, True, True]])
    assert float(hardest_negative_hinge(similarity, same, 0.2, 2)) == pytest.approx(0.4)


def test_soft_structure_loss_is_zero_when_orders_agree_and_restores_flipped_orders():
    inputs = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    assert float(soft_structure_loss(inputs, inputs * 2.0)) == 0.0
    # embedding swaps rows 1 and 2: anchor 0 now sees row 2 nearer than row 1 against the inputs' order
    embedded = inputs[[0, 2, 1]].clone().requires_grad_(True)
    loss = soft_structure_loss(inputs, embedded)
    assert float(loss.detach()) > 0
    loss.backward()
    assert embedded.grad is not None and embedded.grad.abs().sum() > 0


def test_dscmr_label_likelihood_by_hand():
    # identical unit vectors: Θ = ½, S = 1 → log(1 + e^½) − ½; orthogonal: Θ = 0, S = 0 → log 2
    a = torch.tensor([[1.0, 0.0]])
    same = torch.tensor([[True]])
    assert float(label_likelihood_loss(a, a, same)) == pytest.approx(np.log1p(np.exp(0.5)) - 0.5, abs=1e-6)
    b = torch.tensor([[0.0, 3.0]])
    assert float(label_likelihood_loss(a, b, ~same)) == pytest.approx(np.log(2.0), abs=1e-6)


def test_uwml_polynomial_loss_by_hand():
    # row 0: positive 0.5, informative negatives need s + 0.2 > 0.5: 0.4 (0.1 is not) → hardest 0.4;
    #   positive 0.2·0.25 − 0.7·0.5 + 0.5 = 0.2; negative 0.9·0.16 − 0.4·0.4 + 0.03 = 0.014 → 0.214
    # row 1: positive 0.9, negatives 0.2 and 0.3 are not informative (0.5 < 0.9) → adds nothing
    # row 2: positive 1.0 (already at 1) → adds nothing
    similarity = torch.tensor([[0.5, 0.4, 0.1], [0.2, 0.9, 0.3], [0.0, 0.95, 1.0]])
    same = torch.eye(3, dtype=torch.bool)
    loss = polynomial_loss(similarity, same, 0.2, [0.5, -0.7, 0.2], [0.03, -0.4, 0.9])
    assert float(loss) == pytest.approx(0.214, abs=1e-6)


def test_batch_entropy_grows_with_spread():
    rng = torch.Generator().manual_seed(0)
    narrow = torch.randn(256, 8, generator=rng) * 0.1
    assert float(batch_entropy(narrow * 10)) == pytest.approx(float(batch_entropy(narrow)) + 8 * np.log(10), abs=0.05)


@pytest.mark.parametrize("name", BASELINES)
def test_one_step_gradient_reaches_both_branches(weak_data, name):
    model = create_model(name, {**LOOP, **SMALL[name]})
    model.dims = {**weak_data.dataset.music_vectors.dims, **weak_data.dataset.video_vectors.dims}
    torch.manual_seed(0)
    module = model.build(model.dims, weak_data)
    videos, bank = training_tensors(weak_data, torch.device("cpu"))
    loss, logs = module.training_loss({k: v[:64] for k, v in videos.items()}, bank)
    assert torch.isfinite(loss) and all(np.isfinite(v) for v in logs.values())
    loss.backward()
    video_branch = module.video_encoder.parameters()
    music_branch = module.music_encoder.parameters()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in video_branch)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in music_branch)


@pytest.mark.parametrize("name", BASELINES)
def test_short_fit_ranks_training_videos_music_above_chance(trained, weak_data, name):
    ds = weak_data.dataset
    rows = weak_data.train_index
    scores = trained[name].score(ds.video_vectors.subset(rows), ds.music_vectors)
    recall = recall_at_k(scores, ds.video_music_index[rows], ks=(5,))["recall@5"]
    chance = 5 / len(ds.music)
    # a random ranker's Recall@5 over n videos has sd sqrt(p(1-p)/n): beating chance means beyond 4 sd of it
    # (0.125 on the 40 music, ~380 training videos: above 0.19)
    band = 4 * np.sqrt(chance * (1 - chance) / len(rows))
    assert recall > chance + band, f"{name}: training Recall@5 {recall:.3f} vs chance {chance:.3f} + {band:.3f}"


@pytest.mark.parametrize("name", BASELINES)
def test_embeddings_have_the_right_shape_are_finite_and_cope_without_text(trained, weak_data, name):
    model = trained[name]
    vv, mv = weak_data.dataset.video_vectors, weak_data.dataset.music_vectors
    videos = model.embed_videos(vv.visual[:7], vv.text[:7], vv.has_text[:7])
    music = model.embed_music(mv.audio_embedding, mv.audio_lld, mv.ids)
    assert videos.shape[0] == 7 and music.shape[0] == len(mv) and videos.shape[1] == music.shape[1]
    assert np.isfinite(videos).all() and np.isfinite(music).all()
    np.testing.assert_allclose(np.linalg.norm(videos, axis=1), 1.0, atol=1e-5)
    without_text = model.embed_videos(vv.visual[:7])
    assert without_text.shape == videos.shape and np.isfinite(without_text).all()
    nan_text = model.embed_videos(vv.visual[:7], np.full_like(vv.text[:7], np.nan), np.zeros(7, bool))
    np.testing.assert_allclose(nan_text, without_text, atol=1e-6)


@pytest.mark.parametrize("name", BASELINES)
def test_checkpoint_round_trip_gives_identical_scores(trained, weak_data, tmp_path, name):
    model = trained[name]
    loaded = load_model(model.save(tmp_path / f"{name}.pt"))
    assert loaded.name == name and loaded.params == model.params
    ds = weak_data.dataset
    videos = ds.video_vectors.subset(weak_data.val_index)
    np.testing.assert_array_equal(loaded.score(videos, ds.music_vectors), model.score(videos, ds.music_vectors))


def test_bad_parameters_are_named():
    with pytest.raises(ValueError, match="reconstruction 'both' is not one of self, cross"):
        create_model("dual-vae", {"reconstruction": "both"})
    with pytest.raises(ValueError, match="unknown parameter"):
        create_model("uwml", {"latent_dim": 8})
