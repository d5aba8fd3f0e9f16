"""The latent file a simulated dataset carries beside the contract's tables: the true latents behind its features.

oracle.npz holds, by id, each video's latent z_v and each music's video-side centre c_m (the mean of its videos'
latents), so -||z_v - c_m||² is the Bayes ranking the latent oracle scores with, plus each music's audible style
(what its audio features are generated from), for tests and analyses of the simulator. Only simulated datasets
have one; models read it through `bgmrec.models.baselines.LatentOracle`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

ORACLE_FILE = "oracle.npz"


def write_oracle(
    root: str | Path,
    music_ids: np.ndarray,
    music_latent: np.ndarray,
    music_style: np.ndarray,
    video_ids: np.ndarray,
    video_latent: np.ndarray,
) -> Path:
    """Write oracle.npz into a dataset directory; rows align with the id arrays."""
    path = Path(root) / ORACLE_FILE
    np.savez(
        path,
        music_ids=music_ids,
        music_latent=music_latent,
        music_style=music_style,
        video_ids=video_ids,
        video_latent=video_latent,
    )
    return path
