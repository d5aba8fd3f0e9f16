"""VMCML (cross-modality lifting, paper 001 sections 3.1–3.3) and the CEVAR baseline (Surís et al.).

Both papers fine-tune pretrained backbones end to end (VMCML: R(2+1)D ResNet-18 on frames, ResNet-18 on mel
spectrograms). We start from frozen precomputed features instead (the dataset contract's visual / text /
audio_embedding / audio_lld vectors) and learn MLP encoders on top of them:

- video encoder g: visual ⊕ text ⊕ has-text flag → MLP → l = 256. A video without description gets a zero text
  part and flag 0, so it still has an embedding.
- music encoder f: audio_embedding ⊕ audio_lld concatenated *before* the fully connected layers (section 3.3);
  the `use_lld: false` ablation (Table 5) drops audio_lld.

VMCML's losses (section 3.2): CosFace lifting loss (eq. 3) of both modalities against shared prototypes W, one row
per training music, L_LL = L_C(g(v), W) + α·L_C(f(m), W) (eq. 4), plus the similarity loss L_SL with one random
negative music (eq. 5), total L = L_LL + β·L_SL (eq. 6). ArcFace (additive angular margin) is an option.
Inference (section 3.3): a video is embedded by g; a music seen in training is represented by its prototype row
of W, a music never seen by f(m) (see `VMCMLRecommender.embed_music` for the rule on mixed catalogs).

CEVAR (Surís et al. 2018, as both papers use it): two MLP encoders trained with a cosine embedding loss on a
positive pair and a random negative pair; the label (class) prediction loss is removed as both papers do.

Both are trained by the one loop in `bgmrec.train`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bgmrec.models.base import Standardiser, TorchRecommender, TrainingData, l2_normalise
from bgmrec.models.layers import mlp
from bgmrec.models.training_config import TrainingConfig

LIFTING_LOSSES = ("cosface", "arcface")
SEEN_MUSIC_MODES = ("prototype", "encoder")


def margin_logits(
    cosine: torch.Tensor, labels: torch.Tensor, scale: float, margin: float, kind: str = "cosface"
) -> torch.Tensor:
    """Logits of the margin softmax losses, from cosines (B, N) between features and prototypes.

    cosface (VMCML eq. 3, Wang et al.): s·(cos θ_y − μ) for the target class, s·cos θ_j otherwise.
    arcface (Deng et al.): s·cos(θ_y + μ) for the target class, s·cos θ_j otherwise.
    """
    if kind not in LIFTING_LOSSES:
        raise ValueError(f"unknown lifting loss '{kind}'; expected one of {', '.join(LIFTING_LOSSES)}")
    target = cosine.gather(1, labels[:, None])
    if kind == "cosface":
        target_with_margin = target - margin
    else:
        theta = torch.acos(target.clamp(-1 + 1e-6, 1 - 1e-6))
        # Beyond θ + μ > π, cos(θ + μ) is no longer decreasing in θ: fall back to the CosFace-style penalty
        # there (the "easy margin" guard of the ArcFace reference code).
        target_with_margin = torch.where(
            theta + margin < math.pi, torch.cos(theta + margin), target - margin * math.sin(margin)
        )
    logits = cosine.scatter(1, labels[:, None], target_with_margin.to(cosine.dtype))
    return scale * logits


def unit_rows(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Each row divided by its L2 norm (as F.normalize), written as a product with rsqrt: its backward is one
    broadcast multiply instead of a division, which matters on the 3,003 × 256 prototype matrix every step."""
    return x * torch.rsqrt(x.pow(2).sum(1, keepdim=True).clamp_min(eps * eps))


def cosine_embedding_loss(positive_cos: torch.Tensor, negative_cos: torch.Tensor, margin: float) -> torch.Tensor:
    """Mean of (1 − cos(v, m)) + max(0, cos(v, m') − margin) over the batch (Surís et al.'s cosine loss).

    Also VMCML's similarity loss (eq. 5): max(τ, cos(g(v), f(m'))) − cos(g(v), f(m)) equals this with
    margin τ minus the constant 1 − τ, so both have the same gradients; we use the non-negative form.
    """
    return ((1.0 - positive_cos) + F.relu(negative_cos - margin)).mean()


def random_negatives(labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """One music index per video drawn uniformly among the training music other than its own."""
    if n_classes < 2:
        raise ValueError("training needs at least 2 distinct music to draw a negative music")
    offset = torch.randint(1, n_classes, labels.shape, device=labels.device)
    return (labels + offset) % n_classes


class VideoMusicEncoders(nn.Module):
    """The two encoders g (video) and f (music) over standardised frozen features."""

    def __init__(self, dims: dict[str, int], params: dict[str, Any]):
        super().__init__()
        self.use_lld = bool(params["use_lld"])
        self.video_text = bool(params["video_text"])
        self.visual_std = Standardiser(dims["visual"])
        self.text_std = Standardiser(dims["text"])
        self.audio_std = Standardiser(dims["audio_embedding"])
        self.lld_std = Standardiser(dims["audio_lld"])
        dim = int(params["embedding_dim"])
        video_in = dims["visual"] + (dims["text"] + 1 if self.video_text else 0)
        music_in = dims["audio_embedding"] + (dims["audio_lld"] if self.use_lld else 0)
        dropout = float(params["dropout"])
        self.video_encoder = mlp([video_in, *params["video_hidden"], dim], dropout=dropout)
        self.music_encoder = mlp([music_in, *params["music_hidden"], dim], dropout=dropout)

    def fit_standardisers(self, data: TrainingData) -> None:
        """Input statistics from the training videos (text: only those with a description) and training music."""
        ds = data.dataset
        assert ds.video_vectors is not None and ds.music_vectors is not None
        vv, mv = ds.video_vectors, ds.music_vectors
        train = data.train_index
        self.visual_std.fit(vv.visual[train])
        with_text = train[vv.has_text[train]]
        if len(with_text) > 1:
            self.text_std.fit(vv.text[with_text])
        self.audio_std.fit(mv.audio_embedding[data.train_music])
        self.lld_std.fit(mv.audio_lld[data.train_music])

    def encode_videos(self, visual: torch.Tensor, text: torch.Tensor, has_text: torch.Tensor) -> torch.Tensor:
        """g(v): visual ⊕ text ⊕ has-text flag; the text part is zero for videos without a description."""
        if not self.video_text:  # the paper's video encoder sees the frames only (section 3.3)
            return self.video_encoder(self.visual_std(visual))
        flag = has_text.to(visual.dtype)[:, None]
        x = torch.cat([self.visual_std(visual), self.text_std(text) * flag, flag], dim=1)
        return self.video_encoder(x)

    def encode_music(self, audio_embedding: torch.Tensor, audio_lld: torch.Tensor) -> torch.Tensor:
        """f(m): audio_embedding ⊕ audio_lld fused by concatenation before the FC layers (section 3.3)."""
        parts = [self.audio_std(audio_embedding)]
        if self.use_lld:
            parts.append(self.lld_std(audio_lld))
        return self.music_encoder(torch.cat(parts, dim=1))

    def music_of(self, bank: dict[str, torch.Tensor], index: torch.Tensor) -> torch.Tensor:
        """f(m) of the training music rows `index` of the bank."""
        return self.encode_music(bank["audio_embedding"][index], bank["audio_lld"][index])


class VMCMLModule(VideoMusicEncoders):
    """g, f and the shared prototypes W (n_train_music × l), with VMCML's training objective (eq. 6)."""

    def __init__(self, dims: dict[str, int], params: dict[str, Any], n_prototypes: int):
        super().__init__(dims, params)
        self.prototypes = nn.Parameter(torch.randn(n_prototypes, int(params["embedding_dim"])) * 0.01)
        self.scale = float(params["scale"])
        self.margin = float(params["margin"])
        self.lifting_loss = str(params["lifting_loss"])
        self.alpha = float(params["alpha"])
        self.beta = float(params["beta"])
        self.tau = float(params["tau"])

    def lifting(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """L_C(x, W) per row (eq. 3, or ArcFace): margin softmax over cosines to the normalised prototypes."""
        cosine = unit_rows(features) @ unit_rows(self.prototypes).T
        logits = margin_logits(cosine, labels, self.scale, self.margin, self.lifting_loss)
        return F.cross_entropy(logits, labels, reduction="none")

    def training_loss(
        self, batch: dict[str, torch.Tensor], bank: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Eq. 6: L_LL (eq. 4) + β·L_SL (eq. 5).

        One pass does both lifting terms: g(v) and f(m) are stacked and scored against the prototypes in one
        matmul (W normalised once per step), and the positive and negative music go through f together. This is
        the same objective as two separate L_C calls, about 1.5× faster per step on the CPU
        (docs/decisions/vmcml-defaults.md).
        """
        labels = batch["label"]
        n = len(labels)
        video = self.encode_videos(batch["visual"], batch["text"], batch["has_text"])
        if self.beta > 0:
            negative_labels = random_negatives(labels, len(self.prototypes))
            music_rows = self.music_of(bank, torch.cat([labels, negative_labels]))
            music, negative = music_rows[:n], music_rows[n:]
        else:
            music = self.music_of(bank, labels)
        stacked = torch.cat([video, music])
        per_row = self.lifting(stacked, torch.cat([labels, labels]))
        video_lifting, music_lifting = per_row[:n].mean(), per_row[n:].mean()
        loss = video_lifting + self.alpha * music_lifting  # eq. 4
        logs = {
            "loss_lifting_video": float(video_lifting.detach()),
            "loss_lifting_music": float(music_lifting.detach()),
        }
        if self.beta > 0:
            v, m = unit_rows(video), unit_rows(music)
            similarity = cosine_embedding_loss((v * m).sum(1), (v * unit_rows(negative)).sum(1), self.tau)
            loss = loss + self.beta * similarity  # eq. 6
            logs["loss_similarity"] = float(similarity.detach())
        return loss, logs


class CEVARModule(VideoMusicEncoders):
    """CEVAR's two encoders with the cosine embedding loss on one positive and one random negative music."""

    def __init__(self, dims: dict[str, int], params: dict[str, Any], n_music: int):
        super().__init__(dims, params)
        self.margin = float(params["margin"])
        self.n_music = n_music

    def training_loss(
        self, batch: dict[str, torch.Tensor], bank: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        labels = batch["label"]
        n = len(labels)
        v = unit_rows(self.encode_videos(batch["visual"], batch["text"], batch["has_text"]))
        music = unit_rows(self.music_of(bank, torch.cat([labels, random_negatives(labels, self.n_music)])))
        positive, negative = music[:n], music[n:]
        positive_cos, negative_cos = (v * positive).sum(1), (v * negative).sum(1)
        loss = cosine_embedding_loss(positive_cos, negative_cos, self.margin)
        return loss, {
            "positive_cos": float(positive_cos.mean().detach()),
            "negative_cos": float(negative_cos.mean().detach()),
        }


# Section 4.2 gives Adam, lr 1e-5, weight decay 2e-3, batch 128 for end-to-end fine-tuning of pretrained
# backbones on 3 GPUs. Our encoders are trained from scratch on frozen features, on 2 shared CPU cores with a
# wall-clock budget: at lr 1e-5 the model was still far from converged after a 150 s budget on the `small` simulation
# (Recall@10 0.48 after 13 epochs vs 0.86 at lr 1e-3, best at epoch 1; docs/decisions/vmcml-defaults.md), so the
# default is lr 1e-3. Weight decay 2e-3 and batch 128 are kept.
ENCODER_DEFAULTS: dict[str, Any] = {
    **TrainingConfig(lr=1e-3, weight_decay=2e-3, batch_size=128).as_params(),
    "embedding_dim": 256,
    "video_hidden": [256],
    "music_hidden": [256],
    "dropout": 0.1,
    "use_lld": True,
    "video_text": True,  # False: visual-only video encoder g, as in the paper (section 3.3)
}


def _n_train_music(data: TrainingData | None, extra: dict[str, Any]) -> int:
    if data is not None:
        return len(data.train_music)
    return len(extra["train_music_ids"])


class VMCMLRecommender(TorchRecommender):
    """VMCML: encoders g, f and shared prototypes trained with lifting + similarity losses (eqs. 3–6).

    Ablations (model table): `vmcml-nosl` (β = 0, Table 6), `vmcml-nolld` (no audio_lld, Table 5), `vmcml-arcface`.
    """

    name = "vmcml"
    default_params: dict[str, Any] = {
        **ENCODER_DEFAULTS,
        "lifting_loss": "cosface",
        "scale": 30.0,  # s of eq. 3; not given in the paper (CosFace uses 64); see docs/decisions/vmcml-defaults.md
        "margin": 0.2,  # μ, section 4.2
        "alpha": 0.38,  # eq. 4, section 4.2
        "beta": 2.0,  # eq. 6, section 4.2
        "tau": 0.2,  # eq. 5, section 4.2
        # section 3.3; "encoder" scores seen music by f(m) too (docs/decisions/vmcml-defaults.md)
        "seen_music": "prototype",
    }

    def __init__(self, params: dict[str, Any] | None = None):
        super().__init__(params)
        if self.params["lifting_loss"] not in LIFTING_LOSSES:
            raise ValueError(
                f"{self.name}: lifting_loss '{self.params['lifting_loss']}' is not one of {LIFTING_LOSSES}"
            )
        if self.params["seen_music"] not in SEEN_MUSIC_MODES:
            raise ValueError(f"{self.name}: seen_music '{self.params['seen_music']}' is not one of {SEEN_MUSIC_MODES}")
        self._prototype_row: dict[str, int] = {}

    def build(self, dims: dict[str, int], data: TrainingData | None) -> nn.Module:
        module = VMCMLModule(dims, self.params, _n_train_music(data, self.extra))
        if data is not None:
            module.fit_standardisers(data)
        self._prototype_row = {str(m): i for i, m in enumerate(self.extra.get("train_music_ids", []))}
        return module

    @torch.no_grad()
    def prototypes(self) -> np.ndarray:
        """The L2-normalised prototype rows, row i for `extra["train_music_ids"][i]`."""
        module = self._require_module()
        return l2_normalise(module.prototypes.detach().float().cpu().numpy())

    def embed_music(self, audio_embedding, audio_lld, music_ids=None) -> np.ndarray:
        """Rule for a catalog of seen and unseen music (section 3.3): a music whose id was seen in training (has a
        prototype) is represented by its normalised prototype row of W; any other music, or every music when no
        ids are given, by the music encoder f(m). Both live on the same hypersphere because the lifting loss pulls
        f(m) towards its prototype. Features are validated for every row either way.
        """
        encoded = super().embed_music(audio_embedding, audio_lld, music_ids)
        if music_ids is None or self.params["seen_music"] == "encoder":
            return encoded
        ids = np.asarray(music_ids).astype(str).reshape(-1)
        if len(ids) != len(encoded):
            raise ValueError(f"music_ids has {len(ids)} ids but {len(encoded)} music feature rows were given")
        rows = np.array([self._prototype_row.get(m, -1) for m in ids], dtype=np.int64)
        seen = rows >= 0
        if seen.any():
            encoded[seen] = self.prototypes()[rows[seen]]
        return encoded


class CEVARRecommender(TorchRecommender):
    """CEVAR (Surís et al.): two MLP encoders, cosine embedding loss, no label loss; music always embedded by f."""

    name = "cevar"
    default_params: dict[str, Any] = {**ENCODER_DEFAULTS, "margin": 0.2}

    def build(self, dims: dict[str, int], data: TrainingData | None) -> nn.Module:
        module = CEVARModule(dims, self.params, _n_train_music(data, self.extra))
        if data is not None:
            module.fit_standardisers(data)
        return module
