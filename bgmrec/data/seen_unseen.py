"""VMCML's seen/unseen protocol (paper 001 section 4.1, Table 2) as a split kind, `seen-unseen`.

The music are divided into a seen set and an unseen set. The seen music's videos are split 20:1:4 into
train/val/test; every video of an unseen music is in the part `unseen`. One model is trained on the seen music
and evaluated twice: on `test` against the seen music (VMCML scores them by their prototypes) and on `unseen`
against the unseen music (embedded by the music encoder), each gallery ranked in full.

Which music is unseen is part of the data when music.parquet has the optional `music_set` column ("seen" or
"unseen", as MSVD publishes it and the msvd simulator preset writes it); otherwise music are drawn at random in
MSVD's proportion (125 of 390), inside each popularity stratum.
"""

from __future__ import annotations

import numpy as np

UNSEEN_PART = "unseen"
MUSIC_SET_COLUMN = "music_set"
MUSIC_SETS = ("seen", "unseen")
SEEN_RATIOS = (20 / 25, 1 / 25, 4 / 25)  # section 4.1: "divided into training, validation, and testing ... 20:1:4"
UNSEEN_SHARE = 125 / 390


def fractional_assign(n: int, rng: np.random.Generator, ratios: tuple[float, ...]) -> np.ndarray:
    """Assign n shuffled items to consecutive labels 0, 1, ... in the given ratios, exactly in expectation.

    Item at shuffled position i gets u = (i + offset) / n with a random offset and the label of the ratio interval
    u falls in, so a group of 25 gets exactly 20:1:4 and small groups get each label with the right probability.
    """
    order = rng.permutation(n)
    u = (np.arange(n) + rng.random()) / n
    labels = np.searchsorted(np.cumsum(ratios)[:-1], u, side="right")
    out = np.empty(n, dtype=np.int64)
    out[order] = labels
    return out


def unseen_music(music_set: np.ndarray | None, strata: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask of the unseen music: from the `music_set` column when given, else drawn per stratum."""
    if music_set is not None:
        values = np.asarray(music_set).astype(str)
        bad = sorted(set(values) - set(MUSIC_SETS))
        if bad:
            raise ValueError(
                f"music.parquet column '{MUSIC_SET_COLUMN}' has value(s) {', '.join(bad)}; expected seen or unseen"
            )
        return values == "unseen"
    mask = np.zeros(len(strata), bool)
    for s in np.unique(strata):
        members = np.flatnonzero(strata == s)
        mask[members] = fractional_assign(len(members), rng, (1 - UNSEEN_SHARE, UNSEEN_SHARE)) == 1
    return mask


def seen_unseen_labels(
    video_music: np.ndarray, unseen: np.ndarray, rng: np.random.Generator, parts: tuple[str, ...]
) -> np.ndarray:
    """Part label (index into `parts`) of each video: each seen music's videos 20:1:4, unseen music's `unseen`.

    A seen music with one video keeps it in training (as the weak split does): in val or test it would be ranked
    against a seen gallery that cannot hold its music. From two videos on, the first shuffled position always
    falls in the training share, so every seen music has a training video."""
    labels = np.full(len(video_music), parts.index(UNSEEN_PART), dtype=np.int64)
    seen_rows = np.flatnonzero(~unseen[video_music])
    order = seen_rows[np.argsort(video_music[seen_rows], kind="stable")]
    bounds = np.flatnonzero(np.diff(video_music[order])) + 1
    for group in np.split(order, bounds) if len(order) else []:
        assigned = fractional_assign(len(group), rng, SEEN_RATIOS)
        labels[group] = assigned if len(group) > 1 else parts.index("train")
    return labels
