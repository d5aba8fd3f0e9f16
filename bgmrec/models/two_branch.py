"""Two-branch metric-learning baselines of CMVAE Table 2: CBVMR (the table's "CMVBR"), DSCMR and UWML.

Each has a video branch over visual ⊕ text ⊕ has-text flag (the "single modality" CMVAE section 5.1 builds for
methods made for two sources; a video without description gets a zero text part and flag 0) and a music branch
over audio_embedding ⊕ audio_lld: the encoders g and f of `VideoMusicEncoders`, MLPs over standardised frozen
features where the original papers fine-tune their own backbones. Scores are cosines of the L2-normalised outputs.
What each method adds is its loss, computed on the batch's video-music pairs (a batch row is one training video and
its music, as in the originals, where a sample is a pair); two rows with the same music are never each other's
negatives. Every method is trained by the one loop (`bgmrec.train.fit`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bgmrec.models.base import TorchRecommender, TrainingData
from bgmrec.models.training_config import TrainingConfig
from bgmrec.models.vmcml import ENCODER_DEFAULTS, VideoMusicEncoders

# Training settings of the three baselines: CMVAE section 5.2's batch 1,024 and L2 penalty 1e-3 "for all models",
# lr 1e-3 (one value of the paper's grid), as CMVAE's defaults
TRAINING_DEFAULTS: dict[str, Any] = TrainingConfig(batch_size=1024, lr=1e-3, weight_decay=1e-3).as_params()
# The two branches: the vmcml encoders g and f with text in the video branch and the embedding size CMVAE
# section 5.2 fixes "for all models" (512)
BRANCH_DEFAULTS: dict[str, Any] = {
    **ENCODER_DEFAULTS,
    **TRAINING_DEFAULTS,
    "embedding_dim": 512,
    "video_hidden": [512],
    "music_hidden": [512],
    "video_text": True,
}


def pair_batch(
    module: VideoMusicEncoders, batch: dict[str, torch.Tensor], bank: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Video outputs g(v), music outputs f(m) of each row's music, and the (B, B) same-music mask."""
    labels = batch["label"]
    video = module.encode_videos(batch["visual"], batch["text"], batch["has_text"])
    music = module.music_of(bank, labels)
    return video, music, labels[:, None] == labels[None, :]


def hardest_negative_hinge(similarity: torch.Tensor, same: torch.Tensor, margin: float, k: int) -> torch.Tensor:
    """Mean of [margin − s(anchor, hardest positive) + s(anchor, negative)]+ over each row's k most similar
    negatives (CBVMR's inter-modal ranking loss for the row modality as anchor). Rows of `similarity` are anchors,
    `same` marks positives; a row with fewer than k negatives counts the missing ones as 0 in the mean."""
    k = min(k, similarity.shape[1] - 1)
    if k < 1:
        return similarity.sum() * 0.0
    positive = similarity.masked_fill(~same, float("inf")).min(dim=1, keepdim=True).values
    negative = similarity.masked_fill(same, float("-inf")).topk(k, dim=1).values
    hinge = F.relu(margin - positive + negative)  # a missing negative (−inf) gives 0
    return hinge.mean()


def soft_structure_loss(inputs: torch.Tensor, embedded: torch.Tensor, size: int | None = None) -> torch.Tensor:
    """CBVMR's soft intra-modal structure loss: for each anchor i and consecutive batch rows j, j+1, penalise the
    embedding when it orders d(i, j) and d(i, j+1) against the input features' order, by
    (sgn(Δd_input) − sgn(Δd_embedded)) · (d_emb(i, j+1) − d_emb(i, j)), with d = −cosine. The sign factor is a
    constant (it has no gradient), so only pairs whose order flipped move, in the direction that restores it.
    Anchors and pairs are the first `size` rows (the batch is shuffled; all rows when None).
    """
    x = F.normalize(inputs[:size].float(), dim=1)
    z = F.normalize(embedded[:size].float(), dim=1)
    d_input = -(x @ x.T)
    d_embedded = -(z @ z.T)
    coefficient = torch.sign(d_input[:, :-1] - d_input[:, 1:]) - torch.sign(d_embedded[:, :-1] - d_embedded[:, 1:])
    return (coefficient.detach() * (d_embedded[:, 1:] - d_embedded[:, :-1])).mean()


class CBVMRModule(VideoMusicEncoders):
    """Two branches, each ending in batch normalisation before the L2 normalisation (as the released VM-NET)."""

    def __init__(self, dims: dict[str, int], params: dict[str, Any]):
        super().__init__(dims, params)
        dim = int(params["embedding_dim"])
        self.video_norm = nn.BatchNorm1d(dim)
        self.music_norm = nn.BatchNorm1d(dim)
        self.margin = float(params["margin"])
        self.top_k = int(params["top_k"])
        self.structure_size = int(params["structure_size"])
        self.weights = {name: float(params[f"{name}_weight"]) for name in ("video_anchor", "music_anchor", "structure")}

    def video_inputs(self, visual: torch.Tensor, text: torch.Tensor, has_text: torch.Tensor) -> torch.Tensor:
        """The video branch's input: standardised visual ⊕ text (zero without description) ⊕ has-text flag."""
        if not self.video_text:
            return self.visual_std(visual)
        flag = has_text.to(visual.dtype)[:, None]
        return torch.cat([self.visual_std(visual), self.text_std(text) * flag, flag], dim=1)

    def music_inputs(self, audio_embedding: torch.Tensor, audio_lld: torch.Tensor) -> torch.Tensor:
        parts = [self.audio_std(audio_embedding)] + ([self.lld_std(audio_lld)] if self.use_lld else [])
        return torch.cat(parts, dim=1)

    def encode_videos(self, visual: torch.Tensor, text: torch.Tensor, has_text: torch.Tensor) -> torch.Tensor:
        return self.video_norm(self.video_encoder(self.video_inputs(visual, text, has_text)))

    def encode_music(self, audio_embedding: torch.Tensor, audio_lld: torch.Tensor) -> torch.Tensor:
        return self.music_norm(self.music_encoder(self.music_inputs(audio_embedding, audio_lld)))

    def training_loss(
        self, batch: dict[str, torch.Tensor], bank: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """λ_v·L(video anchors) + λ_m·L(music anchors) + λ_s·(L_struct(video) + L_struct(music))."""
        labels = batch["label"]
        video_in = self.video_inputs(batch["visual"], batch["text"], batch["has_text"])
        music_in = self.music_inputs(bank["audio_embedding"][labels], bank["audio_lld"][labels])
        video = self.video_norm(self.video_encoder(video_in))
        music = self.music_norm(self.music_encoder(music_in))
        same = labels[:, None] == labels[None, :]
        similarity = F.normalize(video.float(), dim=1) @ F.normalize(music.float(), dim=1).T
        video_anchor = hardest_negative_hinge(similarity, same, self.margin, self.top_k)
        music_anchor = hardest_negative_hinge(similarity.T, same, self.margin, self.top_k)
        size = self.structure_size
        structure = soft_structure_loss(video_in, video, size) + soft_structure_loss(music_in, music, size)
        loss = (
            self.weights["video_anchor"] * video_anchor
            + self.weights["music_anchor"] * music_anchor
            + self.weights["structure"] * structure
        )
        return loss, {
            "loss_video_anchor": float(video_anchor.detach()),
            "loss_music_anchor": float(music_anchor.detach()),
            "loss_structure": float(structure.detach()),
        }


def label_likelihood_loss(first: torch.Tensor, second: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
    """One term of DSCMR's J2 for a pair of views: mean of log(1 + e^Θ) − S·Θ, Θ = ½·cos, S = 1 for the same label
    (the negative log-likelihood of S under p(S = 1) = σ(Θ))."""
    theta = 0.5 * (F.normalize(first.float(), dim=1) @ F.normalize(second.float(), dim=1).T)
    return (F.softplus(theta) - same.to(theta.dtype) * theta).mean()


class DSCMRModule(VideoMusicEncoders):
    """Modality-specific layers (the branches, ReLU) into one weight-shared linear layer: the common space."""

    def __init__(self, dims: dict[str, int], params: dict[str, Any]):
        super().__init__(dims, params)
        dim = int(params["embedding_dim"])
        self.shared = nn.Linear(dim, dim)
        self.discrimination_weight = float(params["discrimination_weight"])
        self.invariance_weight = float(params["invariance_weight"])

    def encode_videos(self, visual: torch.Tensor, text: torch.Tensor, has_text: torch.Tensor) -> torch.Tensor:
        return self.shared(F.relu(super().encode_videos(visual, text, has_text)))

    def encode_music(self, audio_embedding: torch.Tensor, audio_lld: torch.Tensor) -> torch.Tensor:
        return self.shared(F.relu(super().encode_music(audio_embedding, audio_lld)))

    def training_loss(
        self, batch: dict[str, torch.Tensor], bank: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """λ·J2 + η·J3 (DSCMR's objective without J1, the label-space loss)."""
        video, music, same = pair_batch(self, batch, bank)
        discrimination = (
            label_likelihood_loss(video, video, same)
            + label_likelihood_loss(video, music, same)
            + label_likelihood_loss(music, music, same)
        )
        invariance = (video.float() - music.float()).norm(dim=1).mean()
        loss = self.discrimination_weight * discrimination + self.invariance_weight * invariance
        return loss, {
            "loss_discrimination": float(discrimination.detach()),
            "loss_invariance": float(invariance.detach()),
        }


def polynomial_loss(
    similarity: torch.Tensor, same: torch.Tensor, margin: float, positive_coefficients, negative_coefficients
) -> torch.Tensor:
    """UWML's polynomial loss with its rows as anchors, summed over anchors.

    Row i's positive is the diagonal pair (i, i); its informative negatives are the other-music columns with
    s_ij + margin > s_ii, of which the hardest counts. Loss = [Σ_q a_q s_ii^q]+ + [Σ_q b_q s_in^q]+, a row with
    no informative negative (or a positive already at 1) adds nothing.
    """
    positive = similarity.diagonal()
    candidates = similarity.masked_fill(same | (similarity + margin <= positive[:, None]), float("-inf"))
    negative = candidates.max(dim=1).values
    counted = torch.isfinite(negative) & (positive < 1 - 1e-5)
    negative = torch.where(counted, negative, torch.zeros_like(negative))
    positive_term = F.relu(sum(a * positive**q for q, a in enumerate(positive_coefficients)))
    negative_term = F.relu(sum(b * negative**q for q, b in enumerate(negative_coefficients)))
    return ((positive_term + negative_term) * counted.to(positive.dtype)).sum()


class UWMLModule(VideoMusicEncoders):
    """Two branches trained with UWML's polynomial loss in both directions (video and music as anchors)."""

    def __init__(self, dims: dict[str, int], params: dict[str, Any]):
        super().__init__(dims, params)
        self.margin = float(params["margin"])
        self.positive_coefficients = [float(a) for a in params["positive_coefficients"]]
        self.negative_coefficients = [float(b) for b in params["negative_coefficients"]]

    def training_loss(
        self, batch: dict[str, torch.Tensor], bank: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """(L_P(video anchors) + L_P(music anchors)) / batch size, as the authors' code averages it."""
        video, music, same = pair_batch(self, batch, bank)
        similarity = F.normalize(video.float(), dim=1) @ F.normalize(music.float(), dim=1).T
        coefficients = (self.positive_coefficients, self.negative_coefficients)
        video_anchor = polynomial_loss(similarity, same, self.margin, *coefficients)
        music_anchor = polynomial_loss(similarity.T, same, self.margin, *coefficients)
        loss = (video_anchor + music_anchor) / len(similarity)
        return loss, {"positive_cos": float(similarity.diagonal().mean().detach())}


class TwoBranchRecommender(TorchRecommender):
    """A two-branch baseline: its module class is `module_class`, its standardisers fitted on the training part."""

    module_class: type[VideoMusicEncoders] = VideoMusicEncoders

    def build(self, dims: dict[str, int], data: TrainingData | None) -> nn.Module:
        module = self.module_class(dims, self.params)
        if data is not None:
            module.fit_standardisers(data)
        return module


class CBVMR(TwoBranchRecommender):
    """CBVMR (Hong, Im and Yang, "Content-based video-music retrieval using soft intra-modal structure constraint",
    ACM ICMR 2018; "CMVBR" in CMVAE Table 2): two branches trained with the bi-directional inter-modal ranking loss
    (top-k violating negatives against the hardest positive, d = −cosine) plus the soft intra-modal structure loss
    of each modality. Adapted: MLP branches on frozen features, batch rows are our video-music pairs. Margin 0.1,
    k = 100, anchor weights 3 (music) and 1 (video), structure weight 0.2 and the structure loss on the batch's
    first 100 rows are the authors' released code's (csehong/VM-NET, train.py and embed_structure_loss.py); the
    adversarial modality classifier defined there is left out, as its training script leaves it (weight 0).
    """

    name = "cbvmr"
    module_class = CBVMRModule
    default_params: dict[str, Any] = {
        **BRANCH_DEFAULTS,
        "margin": 0.1,
        "top_k": 100,
        "video_anchor_weight": 1.0,
        "music_anchor_weight": 3.0,
        "structure_weight": 0.2,
        "structure_size": 100,
    }


class DSCMR(TwoBranchRecommender):
    """DSCMR (Zhen, Hu, Wang and Peng, "Deep supervised cross-modal retrieval", CVPR 2019): modality-specific layers
    into a weight-shared layer, trained with its objective J = J1 + λ·J2 + η·J3 minus J1: J2, the discrimination
    loss in the common representation space (negative log-likelihood of the label similarities under Θ = ½·cos,
    over video-video, video-music and music-music pairs), and J3, the modality invariance loss (‖u_i − v_i‖ of each
    pair). Adapted as CMVAE section 5.1 does: J1, the discrimination loss in the label space, is removed, and the
    "label" of a video and of a music is the music's identity (S = 1 for the same music). The authors' code
    (penghu-cs/DSCMR) weights J2 and J3 by 1e-3 and 1e-1 against J1; without J1 only their ratio matters, and that
    ratio (100) collapses the common space here: η = 0.01 with J2 at 1 is the best of η ∈ {0.01, 0.1, 1, 10, 100}
    by validation IPS Recall@25 on the `small` simulation, weak split (0.907, 0.854, 0.686, 0.319, 0.320).
    """

    name = "dscmr"
    module_class = DSCMRModule
    default_params: dict[str, Any] = {
        **BRANCH_DEFAULTS,
        "discrimination_weight": 1.0,
        "invariance_weight": 0.01,
    }


class UWML(TwoBranchRecommender):
    """UWML (Wei, Xu, Yang, Ji, Wang and Shen, "Universal weighting metric learning for cross-modal matching",
    CVPR 2020): its polynomial loss weights each anchor's positive pair and its hardest informative negative
    (s_n + λ > s_p) by polynomials of their cosines, in both directions. Coefficients a = (0.5, −0.7, 0.2),
    b = (0.03, −0.4, 0.9) and margin λ = 0.2 are the authors' released code's (wayne980/PolyLoss). Adapted: UWML has
    no label loss to remove; its SCAN cross-attention backbone for image regions and words is replaced by the two
    MLP branches, as CMVAE section 5.3 removes the image-text specific modules.
    """

    name = "uwml"
    module_class = UWMLModule
    default_params: dict[str, Any] = {
        **BRANCH_DEFAULTS,
        "margin": 0.2,
        "positive_coefficients": [0.5, -0.7, 0.2],
        "negative_coefficients": [0.03, -0.4, 0.9],
    }
