import shutil

import pandas as pd
import pytest

from components.validate_manifests.component import validate_manifests


@pytest.mark.integration
def test_good_manifests_pass(tiny_dataset, params_path, artifact):
    report = artifact("HTML", "manifests")
    assert validate_manifests.python_func(str(tiny_dataset), str(params_path), report) == str(tiny_dataset)
    assert report.metadata["tables"]


@pytest.mark.integration
def test_duplicate_video_id_stops_the_run(tiny_dataset, params_path, artifact, tmp_path):
    broken = shutil.copytree(tiny_dataset, tmp_path / "broken")
    videos = pd.read_parquet(broken / "videos.parquet")
    videos.loc[1, "video_id"] = videos.loc[0, "video_id"]
    videos.to_parquet(broken / "videos.parquet", index=False)
    with pytest.raises(Exception, match=str(videos.loc[0, "video_id"])):
        validate_manifests.python_func(str(broken), str(params_path), artifact("HTML", "manifests"))
