"""Golden values of CMVAE eq. 12, the bi-directional top-k ranking loss (`bidirectional_ranking_loss`), by hand."""

from __future__ import annotations

import pytest
import torch

from bgmrec.models.cmvae import bidirectional_ranking_loss

pytestmark = pytest.mark.unit


def test_bidirectional_ranking_loss_golden_value():
    # Latents are 2-d and given unnormalised: the loss works on cosines, so only directions count.
    #   music m0 → (1, 0), m1 → (0, 1), m2 = (1.2, 1.6) → (0.6, 0.8)
    #   videos v0 = (2, 0) → (1, 0) of m0; v1 = (0, 5) → (0, 1) of m1; v2 = (0.8, 0.6) of m2;
    #          v3 = (0.6, 0.8) of m0 with mask False (e.g. no text for the text-only latent)
    # Cosines (rows v0..v3, columns m0 m1 m2):
    #   v0: 1    0    0.6      positive 1
    #   v1: 0    1    0.8      positive 1
    #   v2: 0.8  0.6  0.96     positive 0.96
    #   v3: 0.6  0.8  1.0      positive 0.6 (masked: neither anchor nor negative)
    # margin 0.5, k = 2, α = 2; hinge [margin − s(pos) + s(neg)]+.
    # Video → music, the 2 most similar other music of each video:
    #   v0: m2 0.6 → 0.1, m1 0 → 0                          = 0.1
    #   v1: m2 0.8 → 0.3, m0 0 → 0                          = 0.3
    #   v2: m0 0.8 → 0.34, m1 0.6 → 0.14                    = 0.48
    # Music → video, the 2 most similar present videos of other music, charged to each matched pair:
    #   m0: v2 0.8, v1 0 (v3 is m0's own and masked)         m1: v2 0.6, v0 0 (v3 masked)
    #   m2: v1 0.8, v0 0.6 (v3 masked)
    #   v0 (m0, pos 1):    0.5 − 1 + 0.8 = 0.3, 0.5 − 1 + 0 → 0       = 0.3
    #   v1 (m1, pos 1):    0.5 − 1 + 0.6 = 0.1, 0.5 − 1 + 0 → 0       = 0.1
    #   v2 (m2, pos 0.96): 0.5 − 0.96 + 0.8 = 0.34, 0.5 − 0.96 + 0.6 = 0.14 = 0.48
    # Per present video, video→music + α·music→video: v0 0.1 + 0.6 = 0.7, v1 0.3 + 0.2 = 0.5,
    # v2 0.48 + 0.96 = 1.44; mean over the 3 present videos = 2.64 / 3 = 0.88.
    music = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.2, 1.6]])
    videos = torch.tensor([[2.0, 0.0], [0.0, 5.0], [0.8, 0.6], [0.6, 0.8]])
    music_of_video = torch.tensor([0, 1, 2, 0])
    mask = torch.tensor([True, True, True, False])
    loss = bidirectional_ranking_loss(videos, music, music_of_video, mask, margin=0.5, top_k=2, alpha=2.0)
    assert float(loss) == pytest.approx(0.88, abs=1e-6)


def test_top_k_one_keeps_only_the_hardest_negative_each_way():
    # Same latents with k = 1 (everything else as above):
    #   video → music: v0 0.1, v1 0.3, v2 0.34;  music → video: v0 0.3, v1 0.1, v2 0.34
    #   per video: v0 0.1 + 2·0.3 = 0.7, v1 0.3 + 2·0.1 = 0.5, v2 0.34 + 2·0.34 = 1.02; mean = 2.22 / 3 = 0.74
    music = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.2, 1.6]])
    videos = torch.tensor([[2.0, 0.0], [0.0, 5.0], [0.8, 0.6], [0.6, 0.8]])
    loss = bidirectional_ranking_loss(
        videos, music, torch.tensor([0, 1, 2, 0]), torch.tensor([True, True, True, False]), 0.5, 1, 2.0
    )
    assert float(loss) == pytest.approx(0.74, abs=1e-6)


def test_loss_is_zero_once_every_positive_beats_every_negative_by_the_margin():
    # The reading of eq. 12 (the hinge of its references, [margin − s(pos) + s(neg)]+): orthogonal music, each video
    # on its own music's direction, cosines 1 against 0, margin 0.5 → every hinge is 0.5 − 1 + 0 < 0.
    # The printed form [margin + s(pos) − s(neg)]+ would give 0.5 + 1 − 0 = 1.5 per term here instead.
    music = torch.eye(3)
    videos = torch.eye(3)[[0, 1, 2, 1]] * 3.0
    loss = bidirectional_ranking_loss(
        videos, music, torch.tensor([0, 1, 2, 1]), torch.ones(4, dtype=torch.bool), 0.5, 2, 3.0
    )
    assert float(loss) == 0.0
