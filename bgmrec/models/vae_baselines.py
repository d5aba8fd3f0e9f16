"""The variational baselines of CMVAE Table 2: Dual-VAE, DA-VAE and Cross-VAE, built as CMVAE section 5.1 builds them.

"We only use the corresponding cross-modal generation module to replace the PoE-based multimodal cross-generation
module in the proposed CMVAE ..., where we concatenate the multimodal features of micro-video to be the query
modality." So each is CMVAE's frame with one Gaussian encoder for the video (visual ⊕ text ⊕ has-text flag; a
video without description gets a zero text part and flag 0) and one for the music (audio_embedding ⊕ audio_lld),
the KL of both posteriors to N(0, I) (CMVAE eq. 11) and CMVAE's bi-directional top-k ranking loss (eq. 12) on the
sampled latents; what differs is the generation term:

- Dual-VAE: self reconstruction, video latent → video features and music latent → music features;
- DA-VAE: the same plus an entropy-maximisation term on the joint (video and music) latent codes;
- Cross-VAE: cross reconstruction, music latent → video features and video latent → music features.

Loss = β·reconstruction + KL + γ·matching (− w·entropy for DA-VAE), with CMVAE's reading of eq. 13 and its
reconstruction scale (squared error per feature of standardised inputs; `CMVAEModule.training_loss`). Ranking uses
the posterior means. Trained by the one loop (`bgmrec.train.fit`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from bgmrec.models.base import Standardiser, TorchRecommender, TrainingData
from bgmrec.models.cmvae import (
    CMVAE,
    GaussianEncoder,
    bidirectional_ranking_loss,
    fit_standardisers,
    kl_to_standard_normal,
    masked_mean,
    reparameterise,
)
from bgmrec.models.layers import mlp

RECONSTRUCTIONS = ("self", "cross")
# CMVAE's own defaults (section 5.2 values and our β, γ, margin, lr; `CMVAE` docstring) for a fair comparison;
# without sub-sampled training, which belongs to CMVAE's PoE module the baselines replace
VAE_DEFAULTS: dict[str, Any] = {
    **{k: v for k, v in CMVAE.default_params.items() if k not in ("generation", "fusion", "subsample")},
    "entropy_weight": 0.0,
}


def batch_entropy(latents: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Differential entropy of the batch's latent codes under a diagonal Gaussian fit, up to a constant:
    ½·Σ_d log(Var_d + eps). Maximised, it spreads the codes over every latent dimension."""
    return 0.5 * torch.log(latents.float().var(dim=0) + eps).sum()


class VariationalMatchingModule(nn.Module):
    """Two Gaussian encoders, one pair of decoders (self or cross reconstruction) and the composite objective."""

    def __init__(self, dims: dict[str, int], params: dict[str, Any]):
        super().__init__()
        self.reconstruction = str(params["reconstruction"])
        self.margin, self.top_k = float(params["margin"]), int(params["top_k"])
        self.alpha, self.beta, self.gamma = float(params["alpha"]), float(params["beta"]), float(params["gamma"])
        self.entropy_weight = float(params["entropy_weight"])
        hidden, latent = int(params["hidden"]), int(params["latent_dim"])
        self.dv, self.dt = dims["visual"], dims["text"]
        dm = dims["audio_embedding"] + dims["audio_lld"]
        self.visual_std, self.text_std, self.music_std = Standardiser(self.dv), Standardiser(self.dt), Standardiser(dm)
        self.video_encoder = GaussianEncoder(self.dv + self.dt + 1, hidden, latent)
        self.music_encoder = GaussianEncoder(dm, hidden, latent)
        # decoders named by what they generate; their input latent is the video's (self) or the music's (cross)
        self.video_decoder = mlp([latent, hidden, self.dv + self.dt])
        self.music_decoder = mlp([latent, hidden, dm])

    def fit_standardisers(self, visual: np.ndarray, text: np.ndarray, has_text: np.ndarray, music: np.ndarray) -> None:
        self.visual_std.fit(visual)
        if has_text.any():
            self.text_std.fit(text[has_text])
        self.music_std.fit(music)

    def _video_features(self, visual, text, has_text) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Standardised visual, text (zero without description) and the has-text flag as a boolean."""
        has_text = has_text.bool()
        zero = torch.zeros((), dtype=text.dtype, device=text.device)
        text = torch.where(has_text[:, None], self.text_std(text), zero)
        return self.visual_std(visual), text, has_text

    def _video_posterior(self, v: torch.Tensor, t: torch.Tensor, has_text: torch.Tensor):
        flag = has_text.to(v.dtype)[:, None]
        return self.video_encoder(torch.cat([v, t, flag], dim=1))

    def encode_videos(self, visual: torch.Tensor, text: torch.Tensor, has_text: torch.Tensor) -> torch.Tensor:
        """Posterior mean of the video latent."""
        return self._video_posterior(*self._video_features(visual, text, has_text))[0]

    def encode_music(self, audio_embedding: torch.Tensor, audio_lld: torch.Tensor) -> torch.Tensor:
        """Posterior mean of the music latent."""
        return self.music_encoder(self.music_std(torch.cat([audio_embedding, audio_lld], dim=1)))[0]

    def _video_error(self, decoded: torch.Tensor, v: torch.Tensor, t: torch.Tensor, has_text: torch.Tensor):
        """Squared error per feature of decoded visual and text; text only where the video has a description."""
        visual_error = (decoded[:, : self.dv] - v).pow(2).mean(1).mean()
        return visual_error + masked_mean((decoded[:, self.dv :] - t).pow(2).mean(1), has_text)

    def training_loss(
        self, batch: dict[str, torch.Tensor], bank: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """β·reconstruction + KL (eq. 11) + γ·matching (eq. 12) − w·entropy, averaged over the batch's videos."""
        music_ids, music_of_video = torch.unique(batch["label"], return_inverse=True)
        # each distinct music of the batch is encoded once, then indexed per video (as CMVAE does)
        music = self.music_std(torch.cat([bank["audio_embedding"][music_ids], bank["audio_lld"][music_ids]], dim=1))
        mu_m, lv_m = self.music_encoder(music)
        z_m = reparameterise(mu_m, lv_m)
        v, t, has_text = self._video_features(batch["visual"], batch["text"], batch["has_text"])
        mu_v, lv_v = self._video_posterior(v, t, has_text)
        z_v = reparameterise(mu_v, lv_v)
        kl = kl_to_standard_normal(mu_v, lv_v).mean() + kl_to_standard_normal(mu_m, lv_m)[music_of_video].mean()
        if self.reconstruction == "self":
            video_error = self._video_error(self.video_decoder(z_v), v, t, has_text)
            music_error = (self.music_decoder(z_m) - music).pow(2).mean(1)[music_of_video].mean()
        else:
            video_error = self._video_error(self.video_decoder(z_m)[music_of_video], v, t, has_text)
            music_error = (self.music_decoder(z_v) - music[music_of_video]).pow(2).mean(1).mean()
        reconstruction = video_error + music_error
        everyone = torch.ones_like(has_text)
        matching = bidirectional_ranking_loss(z_v, z_m, music_of_video, everyone, self.margin, self.top_k, self.alpha)
        loss = self.beta * reconstruction + kl + self.gamma * matching
        logs = {
            "recon": float(reconstruction.detach()),
            "kl": float(kl.detach()),
            "matching": float(matching.detach()),
        }
        if self.entropy_weight:
            entropy = batch_entropy(torch.cat([z_v, z_m]))
            loss = loss - self.entropy_weight * entropy
            logs["entropy"] = float(entropy.detach())
        return loss, logs


class VariationalMatchingRecommender(TorchRecommender):
    """A variational baseline: the module above with the generation term its model name selects."""

    name = "vae-baseline"
    default_params: dict[str, Any] = {**VAE_DEFAULTS, "reconstruction": "self"}

    def __init__(self, params: dict[str, Any] | None = None):
        super().__init__(params)
        if self.params["reconstruction"] not in RECONSTRUCTIONS:
            raise ValueError(
                f"{self.name}: reconstruction '{self.params['reconstruction']}' is not one of "
                f"{', '.join(RECONSTRUCTIONS)}"
            )

    def build(self, dims: dict[str, int], data: TrainingData | None) -> nn.Module:
        module = VariationalMatchingModule(dims, self.params)
        if data is not None:
            fit_standardisers(module, data)
        return module


class DualVAE(VariationalMatchingRecommender):
    """Dual-VAE (Shen, Zhang, Henao, Su and Carin, "Deconvolutional latent-variable model for text sequence
    matching", AAAI 2018), as CMVAE section 5.1 uses it: two VAEs, each reconstructing its own input (question from
    question, answer from answer there; video from video and music from music here), plus the matching loss.
    Adapted: MLP decoders of feature vectors instead of the deconvolutional word-sequence decoder, and CMVAE's
    eq. 12 as the matching loss: CMVAE's dual generation (`cmvae-gen-dual`) with the concatenated video encoder
    instead of PoE and no sub-sampled training."""

    name = "dual-vae"
    default_params: dict[str, Any] = {**VAE_DEFAULTS, "reconstruction": "self"}


class DAVAE(VariationalMatchingRecommender):
    """DA-VAE (Jing et al., "Incomplete cross-modal retrieval with dual-aligned variational autoencoders",
    ACM MM 2020), as CMVAE sections 5.1 and 5.3 describe it: Dual-VAE's self reconstruction and
    matching loss plus an entropy-maximisation constraint on the joint representations. Our reading of that
    constraint, which CMVAE does not write out: the differential entropy of the batch's video and music latent
    codes under a diagonal Gaussian fit (`batch_entropy`), maximised with weight `entropy_weight`; 1 was the best of
    {0.1, 1, 10} by validation IPS Recall@25 on the `small` simulation, weak split."""

    name = "da-vae"
    default_params: dict[str, Any] = {**VAE_DEFAULTS, "reconstruction": "self", "entropy_weight": 1.0}


class CrossVAE(VariationalMatchingRecommender):
    """Cross-VAE (Yu et al., "Crossing variational autoencoders for answer retrieval", ACL 2020), as CMVAE section
    5.1 describes it: cross reconstruction (the video's features generated from the music latent, the
    music's from the video latent) with the matching loss. Adapted: MLP decoders of feature vectors and CMVAE's
    eq. 12 as the matching loss: CMVAE's cross generation with the concatenated video encoder instead of PoE and
    no sub-sampled training. CMVAE section 5.3 also calls it Dual-VAE plus "a cross reconstruction module"; we
    follow section 5.1, which lists only the cross reconstruction and the matching loss."""

    name = "cross-vae"
    default_params: dict[str, Any] = {**VAE_DEFAULTS, "reconstruction": "cross"}
