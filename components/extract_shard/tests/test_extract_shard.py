import pandas as pd
import pytest

from components.extract_shard.component import extract_shard


@pytest.mark.unit
def test_precomputed_features_need_no_extraction(tiny_dataset, params_path):
    assert extract_shard.python_func(str(tiny_dataset), 0, 2, str(params_path)) == 0


@pytest.mark.integration
def test_shard_fills_the_cache_and_counts_bad_media(tmp_path, params_path, tone_writer):
    from bgmrec.data.contract import write_manifests

    for i in range(4):
        tone_writer(tmp_path / "audio" / f"m{i}.wav", 200.0 + 100 * i, seconds=1.0)
    (tmp_path / "audio" / "m2.wav").write_bytes(b"not audio at all")
    music = pd.DataFrame({"music_id": [f"m{i}" for i in range(4)], "audio_path": [f"audio/m{i}.wav" for i in range(4)]})
    videos = pd.DataFrame({"video_id": ["v0"], "music_id": ["m0"], "description": [None],
                           "video_path": ["video/missing.mp4"]})
    write_manifests(tmp_path, music, videos)
    # Shard 0 of 2 holds music m0 and m2 (m2 corrupt) and the one video (missing): two failures.
    assert extract_shard.python_func(str(tmp_path), 0, 2, str(params_path)) == 2
    assert any((tmp_path / "features" / "cache").rglob("*")), "the shard filled no cache entry"
    with pytest.raises(ValueError, match="out of range"):
        extract_shard.python_func(str(tmp_path), 2, 2, str(params_path))
