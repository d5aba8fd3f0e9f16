import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from components.ingest_music_batch.component import ingest_music_batch


@pytest.fixture
def messy_batch(tmp_path, music_world, tone_writer) -> Path:
    """Two good tones, a corrupt file, an id twice and an id the catalog already has."""
    batch = tmp_path / "batch"
    tone_writer(batch / "good-1.wav", 330.0)
    tone_writer(batch / "good-2.wav", 440.0)
    (batch / "broken.mp3").write_bytes(b"ID3 this is not an mp3")
    tone_writer(batch / "twice.wav", 500.0)
    tone_writer(batch / "twice.flac", 520.0)
    tone_writer(batch / f"{music_world.music_ids[0]}.wav", 600.0)
    return batch


def _params(tmp_path, base: Path, **rules) -> str:
    params = yaml.safe_load(base.read_text())
    params["batch"].update(rules)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return str(path)


@pytest.mark.integration
def test_bad_items_are_reported_and_the_batch_refused(messy_batch, music_world, params_path, artifact):
    batch = artifact("Dataset", "batch")
    result = ingest_music_batch.python_func(str(messy_batch), str(music_world.registry_dir), str(params_path), batch)
    assert result.passed is False and result.accepted == 0
    report = json.loads((Path(batch.path) / "batch_report.json").read_text())
    reasons = {item["music_id"]: item["reason"] for item in report["items"]}
    assert reasons["good-1"] is None and reasons["good-2"] is None
    assert "corrupt or unreadable audio" in reasons["broken"]
    assert "duplicate music_id 'twice'" in reasons["twice"]
    assert "already in the catalog" in reasons[music_world.music_ids[0]]
    assert "more than max_rejected_fraction 20%" in result.summary
    assert pd.read_parquet(Path(batch.path) / "music.parquet").empty


@pytest.mark.integration
def test_good_part_goes_on_when_the_rules_allow(messy_batch, music_world, params_path, artifact, tmp_path):
    batch = artifact("Dataset", "batch")
    lenient = _params(tmp_path, params_path, max_rejected_fraction=0.8)
    result = ingest_music_batch.python_func(str(messy_batch), str(music_world.registry_dir), lenient, batch)
    assert result.passed is True and result.accepted == 2
    music = pd.read_parquet(Path(batch.path) / "music.parquet")
    assert sorted(music["music_id"]) == ["good-1", "good-2"]
    assert all(Path(p).is_absolute() and Path(p).exists() for p in music["audio_path"])


@pytest.mark.integration
def test_manifest_gives_titles(new_music_batch, music_world, params_path, artifact):
    batch = artifact("Dataset", "batch")
    result = ingest_music_batch.python_func(str(new_music_batch), str(music_world.registry_dir), str(params_path),
                                            batch)
    assert result.passed is True and result.accepted == 2
    music = pd.read_parquet(Path(batch.path) / "music.parquet").set_index("music_id")
    assert music.loc["fresh-a", "title"] == "Fresh A"
