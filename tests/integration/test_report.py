"""The recommendations report and the catalog's audio previews: charts, previews encoded and decoded back with the
real FFmpeg, the report of a checkpoint and of a registry, and the report opened in a real headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from browser import AUDIO_DURATION_SCRIPT, console_errors, headless_chromium
from typer.testing import CliRunner

from bgmrec.cli import app
from bgmrec.previews import PreviewSettings, catalog_previews_step, encode_preview, preview_file, previews_dir
from bgmrec.report import read_metrics, report_step
from bgmrec.report_html import CHART_HEIGHT, MARGIN_BOTTOM, MARGIN_TOP, recall_chart_svg

SVG = "{http://www.w3.org/2000/svg}"


# --- charts and previews ------------------------------------------------------------------------------------------


@pytest.mark.unit
def test_recall_chart_draws_one_line_per_series_on_a_0_to_1_scale():
    svg = ET.fromstring(recall_chart_svg("cmvae <full>", [1, 5, 10, 20],
                                         {"weak": [0.0, 0.5, 1.0, 1.0], "strong": [0.2, float("nan"), 0.4, 0.6]}))
    assert len(svg.findall(f"{SVG}polyline")) == 2
    dots = svg.findall(f"{SVG}circle")
    assert len(dots) == 7  # the NaN is left out
    heights = [float(dot.get("cy")) for dot in dots[:4]]
    assert heights[0] == pytest.approx(CHART_HEIGHT - MARGIN_BOTTOM) and heights[2] == pytest.approx(MARGIN_TOP)
    assert svg.find(f"{SVG}text").text == "cmvae <full>"  # escaped in the markup, parsed back


@pytest.mark.unit
@pytest.mark.parametrize(("settings", "message"), [({"seconds": 0.1}, "preview seconds=0.1"),
                                                    ({"bitrate_kbps": 320}, "preview bitrate 320 kbps")])
def test_preview_settings_out_of_range_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        PreviewSettings(**settings)


@pytest.mark.integration
def test_a_preview_is_the_middle_of_the_track_as_small_mp3(tone_writer, tmp_path):
    from bgmrec.media.decode import decode_audio, probe

    tone = tone_writer(tmp_path / "tone.wav", 440.0, seconds=6.0)
    mp3 = encode_preview(tone, PreviewSettings(seconds=2.0, bitrate_kbps=32))
    (tmp_path / "preview.mp3").write_bytes(mp3)
    assert probe(tmp_path / "preview.mp3").has_audio
    back = decode_audio(tmp_path / "preview.mp3", 16000, 30.0)
    assert len(back) / 16000 == pytest.approx(2.0, abs=0.1)
    assert len(mp3) < 2.0 * 32_000 / 8 * 1.1  # the bitrate asked for, plus a header
    assert np.abs(back).max() > 0.1  # a tone, not silence


@pytest.mark.integration
def test_a_file_that_is_not_audio_names_itself(tmp_path):
    from bgmrec.media.decode import MediaError

    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all" * 100)
    with pytest.raises(MediaError, match="bad.wav"):
        encode_preview(bad)


@pytest.mark.integration
def test_catalog_previews_are_written_beside_the_catalog_and_kept_on_a_rerun(music_world, registry_copy, tmp_path):
    dataset = Path(shutil.copytree(music_world.dataset_dir, tmp_path / "dataset"))
    music = pd.read_parquet(dataset / "music.parquet")
    music.loc[music["music_id"] == "m05", "audio_path"] = None  # e.g. music a batch added, with no file here
    music.to_parquet(dataset / "music.parquet", index=False)
    first = catalog_previews_step(dataset, registry_copy)
    assert (first["written"], first["kept"], first["without_audio"], first["failures"]) == (5, 0, 1, [])
    assert all(preview_file(previews_dir(registry_copy), m).is_file() for m in music_world.music_ids[:5])
    assert not preview_file(previews_dir(registry_copy), "m05").exists()
    again = catalog_previews_step(dataset, registry_copy)
    assert (again["written"], again["kept"]) == (0, 5)
    os.utime(dataset / "audio" / "m02.wav")  # a changed file: its preview is encoded again
    assert catalog_previews_step(dataset, registry_copy)["written"] == 1


# --- the report ---------------------------------------------------------------------------------------------------


@pytest.mark.unit
def test_metrics_that_are_missing_or_malformed_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="metrics of cmvae: .*nope.json does not exist"):
        read_metrics({"cmvae": tmp_path / "nope.json"})
    (tmp_path / "flat.json").write_text(json.dumps({"recall@10": 0.3}))
    with pytest.raises(ValueError, match="metrics of vmcml: .*flat.json is not"):
        read_metrics({"vmcml": tmp_path / "flat.json"})


@pytest.mark.integration
@pytest.mark.slow
def test_report_of_a_checkpoint_ranks_the_chosen_music_among_the_whole_catalog(tiny_cmvae, tiny_dataset,
                                                                                tmp_path):
    from bgmrec.data.contract import load_dataset
    from bgmrec.models import load_model

    checkpoint = Path(tiny_cmvae["weak"].path) / "model.pt"
    result = report_step(tiny_dataset, tmp_path / "report.html", checkpoint=checkpoint, n_videos=4, k=5)
    dataset = load_dataset(tiny_dataset)
    model = load_model(checkpoint)
    music = model.embed_music(dataset.music_vectors.audio_embedding, dataset.music_vectors.audio_lld,
                              dataset.music_vectors.ids)
    ids = [str(i) for i in dataset.music_vectors.ids]
    assert len(result["shown"]) == 4 and result["catalog_size"] == len(ids)
    for shown in result["shown"]:
        row = int(np.flatnonzero(dataset.videos["video_id"].astype(str) == shown["video_id"])[0])
        vectors = dataset.video_vectors.subset(np.array([row]))
        scores = music @ model.embed_videos(vectors.visual, vectors.text, vectors.has_text)[0]
        chosen = ids.index(shown["chosen"])
        assert shown["chosen"] == str(dataset.videos["music_id"].iloc[row])
        # float32 embeddings normalised twice: a near-tie may fall either way
        assert 1 + int((scores > scores[chosen] + 1e-5).sum()) <= shown["rank"]
        assert shown["rank"] <= 1 + int((scores > scores[chosen] - 1e-5).sum())
        assert shown["listed"] == [ids[i] for i in np.argsort(-scores)[:5]]
    html = (tmp_path / "report.html").read_text()
    assert "no audio file in the dataset" in html and "no video file in the dataset" in html
    assert result["players"] == 0 and 0.0 < result["diversity"]["coverage"] <= 1.0


@pytest.mark.integration
def test_commands_name_what_is_missing(tiny_dataset, tmp_path):
    runner = CliRunner()
    both = runner.invoke(app, ["report", "--dataset", str(tiny_dataset), "--out", str(tmp_path / "r.html"),
                               "--registry", str(tmp_path), "--checkpoint", str(tmp_path / "m.pt")])
    assert both.exit_code == 1 and "give --registry or --checkpoint, not both" in both.output
    empty = runner.invoke(app, ["report", "--dataset", str(tiny_dataset), "--out", str(tmp_path / "r.html"),
                                "--registry", str(tmp_path / "registry")])
    assert empty.exit_code == 1 and "no production model in" in empty.output
    no_catalog = runner.invoke(app, ["previews", "--dataset", str(tiny_dataset), "--registry",
                                     str(tmp_path / "registry")])
    assert no_catalog.exit_code == 1
    assert "catalog.parquet does not exist; run `bgmrec build-catalog`" in no_catalog.output


@pytest.fixture(scope="module")
def media_world(music_world, clip_writer, tmp_path_factory) -> dict[str, Path]:
    """The world of real tones with a video file for every video (three FFmpeg clips of different hues), a
    description with markup in it for each, its registry (production model, catalog) and the model's metrics JSON."""
    from bgmrec.steps import evaluate_step

    root = tmp_path_factory.mktemp("media-world")
    dataset = Path(shutil.copytree(music_world.dataset_dir, root / "dataset"))
    registry = Path(shutil.copytree(music_world.registry_dir, root / "registry"))
    clips = [clip_writer(dataset / "videos" / f"clip{hue}.mp4", hue, seconds=1.5) for hue in (0, 120, 240)]
    videos = pd.read_parquet(dataset / "videos.parquet")
    videos["video_path"] = [f"videos/{clips[i % 3].name}" for i in range(len(videos))]
    videos["description"] = [f"<b>tone</b> & clip {i}" for i in range(len(videos))]
    videos.to_parquet(dataset / "videos.parquet", index=False)
    production = json.loads((registry / "production.json").read_text())
    metrics = root / "metrics" / "vmcml.json"
    evaluate_step(dataset, registry / production["checkpoint"], metrics, split_kinds=("weak",))
    return {"dataset": dataset, "registry": registry, "metrics": metrics}


@pytest.mark.integration
@pytest.mark.slow
def test_report_opens_in_chromium_with_a_player_per_listed_music(media_world, tmp_path):
    out = tmp_path / "reports" / "recommendations.html"
    done = CliRunner().invoke(app, ["report", "--dataset", str(media_world["dataset"]), "--registry",
                                    str(media_world["registry"]), "--metrics", f"vmcml={media_world['metrics']}",
                                    "--out", str(out), "-k", "4", "--preview-seconds", "1.5"])
    assert done.exit_code == 0, done.output
    html = out.read_text()
    assert "&lt;b&gt;tone&lt;/b&gt; &amp; clip" in html  # descriptions are text, never markup
    with headless_chromium(tmp_path / "profile") as browser:
        browser.get(out.as_uri())
        assert browser.title.startswith("bgmrec: recommendations of vmcml")
        cards = browser.find_elements("css selector", "section.video")
        assert cards, "the report shows no video"
        for card in cards:
            rows = card.find_elements("css selector", "tr:not(:first-child)")  # the header row is first
            assert len(rows) == 4
            for row in rows:
                players = row.find_elements("css selector", "audio")
                assert len(players) >= 1, row.text
                assert players[0].get_attribute("src").startswith("data:audio/mpeg;base64,")
            assert card.find_elements("css selector", ".frames img"), "no frames shown"
        assert len(browser.find_elements("css selector", "svg")) == 2
        duration = browser.execute_async_script(AUDIO_DURATION_SCRIPT,
                                                browser.find_elements("css selector", "audio")[0])
        assert duration == pytest.approx(1.5, abs=0.2)
        assert console_errors(browser) == []
