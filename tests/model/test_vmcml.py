"""VMCML and CEVAR: loss formulas, prototypes, training, both inference paths, checkpoints, input errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bgmrec.data.contract import load_dataset
from bgmrec.data.splits import load_or_make_split
from bgmrec.evaluate import evaluate
from bgmrec.models import create_model, load_model
from bgmrec.models.base import TrainingData
from bgmrec.models.vmcml import (
    VMCMLRecommender,
    cosine_embedding_loss,
    margin_logits,
    random_negatives,
)
from bgmrec.train import fit, training_tensors

pytestmark = pytest.mark.model

FAST = {
    "epochs": 12,
    "patience": 12,
    "progress": False,
    "video_hidden": [64],
    "music_hidden": [32],
    "embedding_dim": 32,
}


@pytest.fixture(scope="module")
def weak_data(tiny_dataset) -> TrainingData:
    dataset = load_dataset(tiny_dataset)
    return TrainingData(dataset, load_or_make_split(dataset, "weak", 0), 0)


@pytest.fixture(scope="module")
def trained_vmcml(weak_data) -> VMCMLRecommender:
    model = create_model("vmcml", FAST)
    fit(model, weak_data)
    return model


def test_cosface_logits_subtract_margin_from_target_only():
    cosine = torch.rand(5, 7) * 2 - 1
    labels = torch.tensor([0, 3, 6, 3, 1])
    logits = margin_logits(cosine, labels, scale=30.0, margin=0.2, kind="cosface")
    expected = 30.0 * cosine.clone()
    expected[torch.arange(5), labels] = 30.0 * (cosine[torch.arange(5), labels] - 0.2)
    torch.testing.assert_close(logits, expected)


def test_arcface_logits_add_angle_to_target_only():
    cosine = torch.tensor([[0.5, 0.1, -0.3], [0.2, 0.9, 0.0]])
    labels = torch.tensor([0, 1])
    logits = margin_logits(cosine, labels, scale=10.0, margin=0.2, kind="arcface")
    assert logits[0, 0].item() == pytest.approx(10 * math.cos(math.acos(0.5) + 0.2), rel=1e-5)
    assert logits[1, 1].item() == pytest.approx(10 * math.cos(math.acos(0.9) + 0.2), rel=1e-5)
    assert logits[0, 1].item() == pytest.approx(1.0, rel=1e-5)
    with pytest.raises(ValueError, match="unknown lifting loss 'softmax'"):
        margin_logits(cosine, labels, 10.0, 0.2, kind="softmax")


def test_cosine_embedding_loss_terms_and_eq5_identity():
    # positive term 1 − cos; negative term max(0, cos − margin)
    assert cosine_embedding_loss(torch.tensor([0.7]), torch.tensor([0.5]), 0.2).item() == pytest.approx(0.3 + 0.3)
    assert cosine_embedding_loss(torch.tensor([0.7]), torch.tensor([0.1]), 0.2).item() == pytest.approx(0.3)
    assert cosine_embedding_loss(torch.tensor([1.0]), torch.tensor([-1.0]), 0.2).item() == pytest.approx(0.0)
    # VMCML eq. 5 max(τ, cos⁻) − cos⁺ is the same loss shifted by the constant 1 − τ
    pos, neg, tau = torch.rand(64) * 2 - 1, torch.rand(64) * 2 - 1, 0.2
    eq5 = (torch.clamp(neg, min=tau) - pos).mean()
    assert cosine_embedding_loss(pos, neg, tau).item() == pytest.approx(eq5.item() + 1 - tau, abs=1e-6)


def test_random_negatives_never_the_positive():
    labels = torch.randint(0, 5, (2000,))
    negatives = random_negatives(labels, 5)
    assert (negatives != labels).all() and negatives.min() >= 0 and negatives.max() < 5
    assert len(torch.unique(negatives)) == 5
    with pytest.raises(ValueError, match="at least 2 distinct music"):
        random_negatives(labels[:3] * 0, 1)


@pytest.mark.parametrize("name", ["vmcml", "vmcml-nosl", "vmcml-nolld", "vmcml-arcface", "cevar"])
def test_loss_falls_on_a_small_batch(weak_data, name):
    torch.manual_seed(0)
    model = create_model(name, {**FAST, "dropout": 0.0})
    module = model.build({**weak_data.dataset.music_vectors.dims, **weak_data.dataset.video_vectors.dims}, weak_data)
    videos, bank = training_tensors(weak_data, torch.device("cpu"))
    batch = {k: v[:64] for k, v in videos.items()}
    optimiser = torch.optim.Adam(module.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        torch.manual_seed(1)  # same negative music every step, so the loss is comparable across steps
        loss, logs = module.training_loss(batch, bank)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert all(np.isfinite(v) for v in logs.values())
    assert losses[-1] < 0.5 * losses[0]


def test_prototypes_normalised_one_row_per_training_music(trained_vmcml, weak_data):
    prototypes = trained_vmcml.prototypes()
    assert prototypes.shape == (len(weak_data.train_music), 32)
    np.testing.assert_allclose(np.linalg.norm(prototypes, axis=1), 1.0, atol=1e-5)
    assert trained_vmcml.extra["train_music_ids"] == list(
        weak_data.dataset.music["music_id"].to_numpy()[weak_data.train_music]
    )


def test_seen_music_uses_prototype_unseen_uses_encoder(trained_vmcml, weak_data):
    mv = weak_data.dataset.music_vectors
    seen_ids = trained_vmcml.extra["train_music_ids"][:3]
    rows = [int(np.flatnonzero(mv.ids == m)[0]) for m in seen_ids]
    audio, lld = mv.audio_embedding[rows], mv.audio_lld[rows]
    # a catalog mixing the same features under seen ids and under new ids
    ids = np.array([*seen_ids, "new-a", "new-b", "new-c"])
    mixed = trained_vmcml.embed_music(np.vstack([audio, audio]), np.vstack([lld, lld]), ids)
    encoder = trained_vmcml.embed_music(audio, lld)  # no ids: f(m) for every music
    np.testing.assert_allclose(mixed[:3], trained_vmcml.prototypes()[:3], atol=1e-6)
    np.testing.assert_allclose(mixed[3:], encoder, atol=1e-6)
    assert not np.allclose(mixed[:3], mixed[3:], atol=1e-3)
    np.testing.assert_allclose(np.linalg.norm(mixed, axis=1), 1.0, atol=1e-5)
    forced = create_model("vmcml", {**trained_vmcml.params, "seen_music": "encoder"})
    forced.load_state(
        {"dims": trained_vmcml.dims, "extra": trained_vmcml.extra, "state_dict": trained_vmcml.module.state_dict()}
    )
    np.testing.assert_allclose(forced.embed_music(audio, lld, np.array(seen_ids)), encoder, atol=1e-6)


def test_trained_vmcml_ranks_above_chance(trained_vmcml, weak_data):
    # weak split: every test music is seen, so this scores videos against prototypes; 40 music → chance 0.25
    result = evaluate(trained_vmcml, weak_data.dataset, weak_data.split, "test")
    assert result["recall@10"] > 0.4


def test_strong_split_scores_unseen_music_with_the_encoder(tiny_dataset):
    dataset = load_dataset(tiny_dataset)
    data = TrainingData(dataset, load_or_make_split(dataset, "strong", 0), 0)
    model = create_model("vmcml", {**FAST, "epochs": 2})
    fit(model, data)
    test_music = data.split.gallery(dataset, "test")
    ids = dataset.music_vectors.ids[test_music]
    assert not set(ids) & set(model.extra["train_music_ids"])
    mv = dataset.music_vectors.subset(test_music)
    np.testing.assert_allclose(
        model.embed_music(mv.audio_embedding, mv.audio_lld, mv.ids), model.embed_music(mv.audio_embedding, mv.audio_lld)
    )


def test_video_without_text_is_embedded(trained_vmcml, weak_data):
    vv = weak_data.dataset.video_vectors
    visual = vv.visual[:4]
    no_text = trained_vmcml.embed_videos(visual)
    nan_text = trained_vmcml.embed_videos(visual, np.full_like(vv.text[:4], np.nan), np.zeros(4, bool))
    np.testing.assert_allclose(no_text, nan_text, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(no_text, axis=1), 1.0, atol=1e-5)
    with_text = trained_vmcml.embed_videos(visual, vv.text[:4], np.ones(4, bool))
    assert not np.allclose(with_text, no_text, atol=1e-3)


@pytest.mark.parametrize("name", ["vmcml", "cevar"])
def test_checkpoint_round_trip(tmp_path, weak_data, trained_vmcml, name):
    model = trained_vmcml if name == "vmcml" else create_model("cevar", {**FAST, "epochs": 2})
    if name == "cevar":
        fit(model, weak_data)
    path = model.save(tmp_path / f"{name}.pt")
    loaded = load_model(path)
    assert loaded.name == name and loaded.params == model.params
    vv, mv = weak_data.dataset.video_vectors, weak_data.dataset.music_vectors
    np.testing.assert_array_equal(
        loaded.embed_videos(vv.visual, vv.text, vv.has_text), model.embed_videos(vv.visual, vv.text, vv.has_text)
    )
    ids = np.array([*mv.ids[:-2], "unseen-1", "unseen-2"])
    np.testing.assert_array_equal(
        loaded.embed_music(mv.audio_embedding, mv.audio_lld, ids),
        model.embed_music(mv.audio_embedding, mv.audio_lld, ids),
    )


def test_bad_input_raises_clear_errors(trained_vmcml, weak_data):
    vv, mv = weak_data.dataset.video_vectors, weak_data.dataset.music_vectors
    with pytest.raises(ValueError, match="visual vector has 10 values, expected 64"):
        trained_vmcml.embed_videos(np.zeros((2, 10), np.float32))
    bad_visual = vv.visual[:3].copy()
    bad_visual[1, 0] = np.nan
    with pytest.raises(ValueError, match="visual vector of row 1 contains NaN"):
        trained_vmcml.embed_videos(bad_visual)
    bad_audio = mv.audio_embedding[:3].copy()
    bad_audio[2, 5] = np.inf
    with pytest.raises(ValueError, match="audio_embedding vector of row 2 contains NaN or infinite"):
        trained_vmcml.embed_music(bad_audio, mv.audio_lld[:3], mv.ids[:3])
    with pytest.raises(ValueError, match="audio_lld vector has 3 values, expected 16"):
        trained_vmcml.embed_music(mv.audio_embedding[:2], np.zeros((2, 3)), mv.ids[:2])
    with pytest.raises(ValueError, match="music_ids has 1 ids but 3 music feature rows"):
        trained_vmcml.embed_music(mv.audio_embedding[:3], mv.audio_lld[:3], mv.ids[:1])
    with pytest.raises(ValueError, match="lifting_loss 'softmax'"):
        create_model("vmcml", {"lifting_loss": "softmax"})
    with pytest.raises(ValueError, match="unknown parameter"):
        create_model("cevar", {"scale": 30})


def test_time_budget_stops_inside_an_epoch(weak_data):
    # the training loop checks max_seconds after every step, so a big epoch cannot overrun the budget
    model = create_model("cevar", {**FAST, "max_seconds": 1e-9, "batch_size": 64})
    report = fit(model, weak_data)
    assert report["epochs"] == 1
    assert report["history"][0]["videos"] == 64 < len(weak_data.train_index)
    assert "val_ips_recall@25" in report["history"][0]


def test_training_is_deterministic_by_seed(weak_data):
    vv = weak_data.dataset.video_vectors
    embeddings = []
    for _ in range(2):
        model = create_model("vmcml", {**FAST, "epochs": 2})
        fit(model, weak_data)
        embeddings.append(model.embed_videos(vv.visual[:20], vv.text[:20], vv.has_text[:20]))
    np.testing.assert_array_equal(embeddings[0], embeddings[1])
