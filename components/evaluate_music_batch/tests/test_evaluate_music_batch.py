import json
import shutil

import pytest

from components.evaluate_music_batch.component import evaluate_music_batch


@pytest.mark.integration
@pytest.mark.slow
def test_batch_videos_rank_the_new_music(extracted_batch, new_music_batch, music_world, params_path, artifact,
                                         clip_writer, tmp_path):
    batch = shutil.copytree(new_music_batch, tmp_path / "batch")
    clip_writer(batch / "clips" / "c1.mp4", hue=30)
    clip_writer(batch / "clips" / "c2.mp4", hue=200)
    (batch / "clips" / "c3.mp4").write_bytes(b"not a video")
    (batch / "videos.csv").write_text("video_id,music_id,description,video_path\n"
                                      "c1,fresh-a,,clips/c1.mp4\nc2,fresh-b,,clips/c2.mp4\nc3,fresh-a,,clips/c3.mp4\n")
    metrics = artifact("Metrics", "batch_metrics.json")
    evaluate_music_batch.python_func(str(batch), extracted_batch["features"], str(music_world.registry_dir),
                                     str(params_path), metrics)
    result = json.loads(open(metrics.path).read())
    assert result["videos"] == 2 and result["music"] == 2
    assert len(result["failures"]) == 1 and result["failures"][0].startswith("c3:")
    assert 0.0 <= result["metrics"]["recall@1"] <= 1.0
    assert metrics.metadata["batch.recall@1"] == result["metrics"]["recall@1"]
