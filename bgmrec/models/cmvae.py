"""CMVAE: the cross-modal variational auto-encoder of paper 000 (section 4, eqs. 7-13, Algorithm 1).

Music (audio_embedding ⊕ audio_lld), visual and text each get a Gaussian MLP encoder (ReLU). The visual and text
experts are fused into the video latent by a product of experts (eqs. 8-9); a video without a description drops
the text expert through a mask. The music latent decodes the video's visual and text features and the video
latent decodes the music features (cross-generation, eq. 10); both latents are pulled to N(0, I) (eq. 11); a
bi-directional top-k hinge ranking loss aligns them (eq. 12). Algorithm 1's sub-sampled training adds the same
video-side objective for the visual-only and the text-only latents. Ranking uses the posterior means.

Ablations (paper Tables 3-5) are parameters: `generation` none / dual / cross, `fusion` poe / moe / concat; text
removed at test time is the benchmark's `@notext` variant.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bgmrec.models.base import Standardiser, TorchRecommender, TrainingData
from bgmrec.models.layers import mlp
from bgmrec.models.training_config import TrainingConfig

GENERATIONS = ("none", "dual", "cross")
FUSIONS = ("poe", "moe", "concat")
LOGVAR_LIMIT = 8.0


class GaussianEncoder(nn.Module):
    """An MLP (ReLU) that maps features to the mean and log-variance of a diagonal Gaussian posterior."""

    def __init__(self, n_in: int, hidden: int, latent: int):
        super().__init__()
        self.net = mlp([n_in, hidden, 2 * latent])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.net(x).chunk(2, dim=-1)
        return mu, logvar.clamp(-LOGVAR_LIMIT, LOGVAR_LIMIT)


def product_of_experts(
    mus: list[torch.Tensor], logvars: list[torch.Tensor], masks: list[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian product of the present experts (eqs. 8-9): precision = Σ precisions, mean = precision-weighted mean.

    As in eqs. 8-9 the product has no N(0, I) prior expert: a video with one modality gets exactly that expert's
    posterior, and the KL of eq. 11 is what pulls the fused latent to the prior. `masks[i]` (B,) is False where
    expert i is missing (a video without description); every row needs at least one present expert.
    """
    precision = torch.zeros_like(mus[0])
    weighted = torch.zeros_like(mus[0])
    for mu, logvar, mask in zip(mus, logvars, masks, strict=True):
        p = torch.exp(-logvar) * mask.to(mu.dtype)[:, None]
        precision = precision + p
        weighted = weighted + mu * p
    return weighted / precision, -torch.log(precision)


def kl_to_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per row, summed over latent dimensions (eq. 11)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)


def reparameterise(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weight = mask.to(values.dtype)
    return (values * weight).sum() / weight.sum().clamp_min(1.0)


def bidirectional_ranking_loss(
    video_latent: torch.Tensor,
    music_latent: torch.Tensor,
    music_of_video: torch.Tensor,
    mask: torch.Tensor,
    margin: float,
    top_k: int,
    alpha: float,
) -> torch.Tensor:
    """Eq. 12 per video, on cosine similarities of in-batch pairs, k most confusing negatives per direction.

    `music_latent` (U, d) holds the batch's distinct music and `music_of_video` (B,) indexes it. Video→music: for
    each video the k negative music with the highest cosine; music→video (weight α): for each music the k videos of
    other music with the highest cosine, charged to each of its matched pairs. Eq. 12 as printed reads
    [margin + s(pos) − s(neg)]+, which minimised would push matched pairs apart; we take the standard hinge of its
    references [51, 52], [margin − s(pos) + s(neg)]+, zero once the margin is met. Videos with mask False (e.g. no
    text for the text-only latent) neither anchor nor serve as negatives.
    """
    v = F.normalize(video_latent.float(), dim=-1)
    m = F.normalize(music_latent.float(), dim=-1)
    sim = v @ m.T
    positive = sim.gather(1, music_of_video[:, None]).squeeze(1)
    is_positive = F.one_hot(music_of_video, m.shape[0]).bool()
    zero = torch.zeros_like(positive)
    video_to_music = zero
    k_music = min(top_k, m.shape[0] - 1)
    if k_music > 0:
        hardest = sim.masked_fill(is_positive, float("-inf")).topk(k_music, dim=1).values
        video_to_music = F.relu(margin - positive[:, None] + hardest).sum(1)
    music_to_video = zero
    k_video = min(top_k, v.shape[0] - 1)
    if k_video > 0:
        hardest = sim.masked_fill(is_positive | ~mask[:, None], float("-inf")).topk(k_video, dim=0).values
        music_to_video = F.relu(margin - positive[:, None] + hardest[:, music_of_video].T).sum(1)
    return masked_mean(video_to_music + alpha * music_to_video, mask)


class CMVAEModule(nn.Module):
    """The encoders, decoders and the eq. 13 objective; inputs are raw features, standardised inside."""

    def __init__(self, dims: dict[str, int], params: dict[str, Any]):
        super().__init__()
        self.generation = str(params["generation"])
        self.fusion = str(params["fusion"])
        self.subsample = bool(params["subsample"])
        self.margin = float(params["margin"])
        self.top_k = int(params["top_k"])
        self.alpha = float(params["alpha"])
        self.beta = float(params["beta"])
        self.gamma = float(params["gamma"])
        hidden, latent = int(params["hidden"]), int(params["latent_dim"])
        dv, dt = dims["visual"], dims["text"]
        dm = dims["audio_embedding"] + dims["audio_lld"]
        self.visual_std, self.text_std, self.music_std = Standardiser(dv), Standardiser(dt), Standardiser(dm)
        self.music_encoder = GaussianEncoder(dm, hidden, latent)
        if self.fusion == "concat":
            # JMVAE-like: one encoder over visual ⊕ text ⊕ has-text flag (a missing modality is zeros)
            self.joint_encoder = GaussianEncoder(dv + dt + 1, hidden, latent)
        else:
            self.visual_encoder = GaussianEncoder(dv, hidden, latent)
            self.text_encoder = GaussianEncoder(dt, hidden, latent)
        if self.generation == "cross":
            self.music_to_visual = mlp([latent, hidden, dv])
            self.music_to_text = mlp([latent, hidden, dt])
            self.video_to_music = mlp([latent, hidden, dm])
        elif self.generation == "dual":
            self.music_to_music = mlp([latent, hidden, dm])
            self.video_to_visual = mlp([latent, hidden, dv])
            self.video_to_text = mlp([latent, hidden, dt])

    def fit_standardisers(self, visual: np.ndarray, text: np.ndarray, has_text: np.ndarray, music: np.ndarray) -> None:
        self.visual_std.fit(visual)
        if has_text.any():
            self.text_std.fit(text[has_text])
        self.music_std.fit(music)

    def _inputs(self, visual, text, has_text) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        has_text = has_text.bool()
        text = torch.where(
            has_text[:, None], self.text_std(text), torch.zeros((), dtype=text.dtype, device=text.device)
        )
        return self.visual_std(visual), text, has_text

    def _joint(self, v: torch.Tensor, t: torch.Tensor, has_text: torch.Tensor, use_visual: bool = True) -> tuple:
        flag = has_text.to(v.dtype)[:, None]
        visual = v if use_visual else torch.zeros_like(v)
        return self.joint_encoder(torch.cat([visual, t * flag, flag], dim=1))

    def video_posteriors(self, v, t, has_text) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(mu, logvar, present) of the fused video latent and, for sub-sampled training, each modality's latent.

        For MoE the 'video' entry holds the mixture mean and the components are used for sampling and the KL.
        """
        everyone = torch.ones_like(has_text)
        if self.fusion == "concat":
            out = {"video": (*self._joint(v, t, has_text), everyone)}
            out["visual"] = (*self._joint(v, t, torch.zeros_like(has_text)), everyone)
            out["text"] = (*self._joint(v, t, has_text, use_visual=False), has_text)
            return out
        mu_v, lv_v = self.visual_encoder(v)
        mu_t, lv_t = self.text_encoder(t)
        out = {"visual": (mu_v, lv_v, everyone), "text": (mu_t, lv_t, has_text)}
        if self.fusion == "poe":
            out["video"] = (*product_of_experts([mu_v, mu_t], [lv_v, lv_t], [everyone, has_text]), everyone)
        else:
            w = has_text.to(mu_v.dtype)[:, None]
            out["video"] = ((mu_v + w * mu_t) / (1.0 + w), lv_v, everyone)
        return out

    def encode_videos(self, visual: torch.Tensor, text: torch.Tensor, has_text: torch.Tensor) -> torch.Tensor:
        """Posterior mean of the video latent (PoE of the present experts); text is ignored where has_text False."""
        return self.video_posteriors(*self._inputs(visual, text, has_text))["video"][0]

    def encode_music(self, audio_embedding: torch.Tensor, audio_lld: torch.Tensor) -> torch.Tensor:
        """Posterior mean of the music latent."""
        return self.music_encoder(self.music_std(torch.cat([audio_embedding, audio_lld], dim=1)))[0]

    def _video_sample_and_kl(self, name: str, posteriors: dict) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar, _ = posteriors[name]
        if name == "video" and self.fusion == "moe":
            # MoE: sample one present expert per video; the KL of the mixture is bounded by the experts' mean KL
            mu_v, lv_v, _ = posteriors["visual"]
            mu_t, lv_t, has_text = posteriors["text"]
            pick_text = has_text & (torch.rand(has_text.shape, device=mu_v.device) < 0.5)
            z = torch.where(pick_text[:, None], reparameterise(mu_t, lv_t), reparameterise(mu_v, lv_v))
            w = has_text.to(mu_v.dtype)
            kl = (kl_to_standard_normal(mu_v, lv_v) + w * kl_to_standard_normal(mu_t, lv_t)) / (1.0 + w)
            return z, kl
        return reparameterise(mu, logvar), kl_to_standard_normal(mu, logvar)

    def training_loss(
        self, batch: dict[str, torch.Tensor], bank: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Eq. 13 plus Algorithm 1's sub-sampled terms, averaged over the batch's videos.

        Eq. 13 prints L = β·L_cross_recon − L_KL + γ·L_matching with L_cross_recon written as a likelihood (eq. 10);
        we take the reading that makes it a loss to minimise, the negative ELBO plus the matching loss:
        L = β·(reconstruction error) + KL + γ·L_matching. The reconstruction error is the squared error per feature
        of standardised inputs (mean over features, i.e. a unit-variance Gaussian log-likelihood divided by the
        feature count), so β is on a different scale from the paper's 1e5 (whose reconstruction scale the paper
        does not give); see docs/decisions/cmvae-loss-scale.md for the measured effect of β.
        """
        music_ids, music_of_video = torch.unique(batch["label"], return_inverse=True)
        # each distinct music of the batch is encoded (and decoded) once, then indexed per video
        music = self.music_std(torch.cat([bank["audio_embedding"][music_ids], bank["audio_lld"][music_ids]], dim=1))
        mu_m, lv_m = self.music_encoder(music)
        z_m = reparameterise(mu_m, lv_m)
        v, t, has_text = self._inputs(batch["visual"], batch["text"], batch["has_text"])
        posteriors = self.video_posteriors(v, t, has_text)
        everyone = torch.ones_like(has_text)

        kl = kl_to_standard_normal(mu_m, lv_m)[music_of_video].mean()
        recon = torch.zeros((), device=v.device)
        if self.generation == "cross":
            recon = recon + self._video_feature_error(
                self.music_to_visual(z_m)[music_of_video], self.music_to_text(z_m)[music_of_video], v, t, has_text
            )
        elif self.generation == "dual":
            error = (self.music_to_music(z_m) - music).pow(2).mean(1)
            recon = recon + error[music_of_video].mean()
        matching = torch.zeros((), device=v.device)
        logs: dict[str, float] = {}
        latents = ("video", "visual", "text") if self.subsample else ("video",)
        for name in latents:
            present = posteriors[name][2] if name == "text" else everyone
            if not bool(present.any()):
                continue
            z_v, kl_v = self._video_sample_and_kl(name, posteriors)
            kl = kl + masked_mean(kl_v, present)
            if self.generation == "cross":
                error = (self.video_to_music(z_v) - music[music_of_video]).pow(2).mean(1)
                recon = recon + masked_mean(error, present)
            elif self.generation == "dual":
                recon = recon + self._video_feature_error(
                    self.video_to_visual(z_v), self.video_to_text(z_v), v, t, present & has_text, present
                )
            term = bidirectional_ranking_loss(z_v, z_m, music_of_video, present, self.margin, self.top_k, self.alpha)
            matching = matching + term
            logs[f"matching_{name}"] = float(term.detach())
        loss = self.beta * recon + kl + self.gamma * matching
        logs.update(recon=float(recon.detach()), kl=float(kl.detach()), matching=float(matching.detach()))
        return loss, logs

    @staticmethod
    def _video_feature_error(visual_hat, text_hat, v, t, has_text, present=None) -> torch.Tensor:
        """Squared error per feature of decoded visual and text features; text only where the video has one."""
        present = torch.ones_like(has_text) if present is None else present
        visual_error = masked_mean((visual_hat - v).pow(2).mean(1), present)
        return visual_error + masked_mean((text_hat - t).pow(2).mean(1), has_text)


def fit_standardisers(module: CMVAEModule | nn.Module, data: TrainingData) -> None:
    """Fit a variational matching module's input standardisers on the training videos and their music."""
    vv, mv = data.dataset.video_vectors, data.dataset.music_vectors
    assert vv is not None and mv is not None
    rows, music_rows = data.train_index, data.train_music
    module.fit_standardisers(
        vv.visual[rows],
        vv.text[rows],
        vv.has_text[rows],
        np.concatenate([mv.audio_embedding[music_rows], mv.audio_lld[music_rows]], axis=1),
    )


class CMVAE(TorchRecommender):
    """CMVAE (paper 000) as a TorchRecommender: built here, trained by the loop in `bgmrec.train`.

    Defaults are the paper's (section 5.2: embedding 512, batch 1,024, L2 1e-3, α 3, k 10; no optimiser is named,
    Algorithm 1 takes "stochastic gradient steps", and the loop's is Adam) except where the
    paper's value is tied to an unknown scale or optimiser detail: β (see `CMVAEModule.training_loss`), the
    learning rate (the paper's 0.05 / 1e-4 are for its own setup; 1e-3 is stable here) and the margin (not given).
    """

    name = "cmvae"
    default_params: dict[str, Any] = {
        **TrainingConfig(batch_size=1024, lr=1e-3, weight_decay=1e-3).as_params(),
        "latent_dim": 512,
        "hidden": 256,
        "generation": "cross",
        "fusion": "poe",
        "subsample": True,
        "margin": 0.2,
        "top_k": 10,
        "alpha": 3.0,
        "beta": 100.0,
        "gamma": 100.0,
    }

    def __init__(self, params: dict[str, Any] | None = None):
        super().__init__(params)
        if self.params["generation"] not in GENERATIONS:
            raise ValueError(f"cmvae: generation '{self.params['generation']}' is not one of {', '.join(GENERATIONS)}")
        if self.params["fusion"] not in FUSIONS:
            raise ValueError(f"cmvae: fusion '{self.params['fusion']}' is not one of {', '.join(FUSIONS)}")

    def build(self, dims: dict[str, int], data: TrainingData | None) -> nn.Module:
        module = CMVAEModule(dims, self.params)
        if data is not None:
            fit_standardisers(module, data)
        return module
