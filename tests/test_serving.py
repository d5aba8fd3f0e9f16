"""The BentoML recommender: every endpoint and every bad input in-process (ASGI), then `bgmrec serve` over HTTP.

The model is a real CMVAE trained for one epoch on a tiny simulated dataset whose visual/text widths are the media
extractors' (so uploads embed into the model's input space); video vectors come from a real Feast repo.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_UPLOAD_MB = 0.1
ADMIN_TOKEN = "test-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture(scope="session")
def served(tmp_path_factory) -> dict[str, Path]:
    """A dataset, a registry with a promoted CMVAE and its catalog, and a materialised Feast repo."""
    from bgmrec import feature_store
    from bgmrec.data.contract import load_dataset
    from bgmrec.data.simulate import simulate
    from bgmrec.data.splits import make_split
    from bgmrec.media.config import ExtractionConfig
    from bgmrec.media.registry import create_extractor
    from bgmrec.models import create_model
    from bgmrec.models.base import TrainingData
    from bgmrec.registry import ModelRegistry
    from bgmrec.steps import build_catalog_step

    base = tmp_path_factory.mktemp("serving")
    dataset = base / "dataset"
    config = ExtractionConfig()
    dims = {kind: create_extractor(kind, config).dim for kind in ("visual", "text")}
    simulate("tiny", seed=0, out=dataset, dims=dims)
    ds = load_dataset(dataset)
    model = create_model("cmvae", {"epochs": 1, "progress": False, "latent_dim": 32, "hidden": 32})
    model.fit(TrainingData(ds, make_split(ds, "strong", 0)))
    checkpoint = model.save(base / "cmvae.pt")
    registry = ModelRegistry(base / "registry")
    registry.promote(registry.register(checkpoint, {"weak": {"test": {"recall@10": 0.0}}}, "cmvae"))
    build_catalog_step(dataset, registry.root)

    repo = base / "feast"
    repo.mkdir()
    for name in ("definitions.py", "feature_store.yaml"):
        shutil.copy(ROOT / "features" / name, repo / name)
    feature_store.stage_repo_data(repo, dataset)
    store = feature_store.open_store(repo)
    feature_store.apply_repo(store, repo)
    feature_store.materialize_all(store)
    return {"dataset": dataset, "registry": registry.root, "feast": repo}


@pytest.fixture(scope="session")
def videos(served) -> dict[str, object]:
    """Ids and vectors of one video with a description and one without."""
    from bgmrec.data.contract import load_dataset

    vv = load_dataset(served["dataset"]).video_vectors
    with_text, without_text = int(np.flatnonzero(vv.has_text)[0]), int(np.flatnonzero(~vv.has_text)[0])
    return {
        "text_id": str(vv.ids[with_text]), "visual": vv.visual[with_text].tolist(), "text": vv.text[with_text].tolist(),
        "notext_id": str(vv.ids[without_text]), "notext_visual": vv.visual[without_text].tolist(),
    }


@pytest.fixture(scope="session")
def clip(tmp_path_factory) -> Path:
    """A one-second synthetic video (FFmpeg testsrc2)."""
    import imageio_ffmpeg

    path = tmp_path_factory.mktemp("media") / "clip.mp4"
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "lavfi", "-i",
         "testsrc2=size=160x120:rate=10", "-t", "1", "-pix_fmt", "yuv420p", str(path)],
        check=True,
    )
    return path


@pytest.fixture(scope="module")
def client_registry(served, tmp_path_factory) -> Path:
    """The in-process service's own copy of the registry (tests change its files to see them followed)."""
    return Path(shutil.copytree(served["registry"], tmp_path_factory.mktemp("client") / "registry"))


@pytest.fixture(scope="module")
def client(served, client_registry, server_process):
    """An in-process HTTP client of the service (starlette TestClient over Svc.to_asgi()).

    Requests `server_process` only so that the `bgmrec serve` subprocess warms up while these tests run.
    """
    import bentoml
    from starlette.testclient import TestClient

    env = {
        "BGMREC_REGISTRY": str(client_registry),
        "BGMREC_ADMIN_TOKEN": ADMIN_TOKEN,
        "BGMREC_REGISTRY_POLL_S": "0.2",
        "BGMREC_FEATURE_REPO": str(served["feast"]),
        "BGMREC_MONITOR_INTERVAL_S": "0",
        "BGMREC_MAX_UPLOAD_MB": str(MAX_UPLOAD_MB),
    }
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        svc = bentoml.load("serving.service:BgmRecommender", working_dir=str(ROOT))
        with TestClient(svc.to_asgi()) as test_client:
            yield test_client
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _error(response) -> str:
    body = response.json()
    body = body[0] if isinstance(body, list) else body
    return str(body.get("error", "")) + str(body.get("detail", ""))


def _metric(text: str, name: str, labels: str = "") -> float | None:
    match = re.search(rf"^{re.escape(name + labels)} ([-+0-9.eEinfa]+)$", text, flags=re.MULTILINE)
    return float(match.group(1)) if match else None


# --- recommend_by_features ------------------------------------------------------------------------------------


@pytest.mark.integration
def test_features_returns_k_ranked_music_from_the_catalog(client, videos):
    r = client.post("/recommend_by_features", json={"visual": videos["visual"], "text": videos["text"], "k": 7})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["items"]) == 7 and body["k"] == 7 and body["model_version"].startswith("v0001")
    scores = [item["score"] for item in body["items"]]
    assert scores == sorted(scores, reverse=True) and all(-1.0 <= s <= 1.0 for s in scores)
    catalog = client.post("/catalog", json={"limit": 1000}).json()
    known = {item["music_id"]: item["title"] for item in catalog["items"]}
    assert all(known[item["music_id"]] == item["title"] for item in body["items"])


@pytest.mark.integration
def test_features_without_text_works(client, videos):
    r = client.post("/recommend_by_features", json={"visual": videos["visual"], "k": 5})
    assert r.status_code == 200, r.text
    assert len(r.json()["items"]) == 5


@pytest.mark.integration
def test_options_exclude_mmr_and_debias(client, videos):
    plain = client.post("/recommend_by_features", json={"visual": videos["visual"], "k": 5}).json()["items"]
    excluded = [plain[0]["music_id"], plain[1]["music_id"]]
    r = client.post("/recommend_by_features", json={"visual": videos["visual"], "k": 5, "exclude": excluded})
    ids = [item["music_id"] for item in r.json()["items"]]
    assert len(ids) == 5 and not set(ids) & set(excluded)
    assert ids[:3] == [item["music_id"] for item in plain[2:]]
    for options in ({"mmr_lambda": 0.0}, {"popularity_debias": 5.0}):
        r = client.post("/recommend_by_features", json={"visual": videos["visual"], "k": 5, **options})
        assert r.status_code == 200 and len(r.json()["items"]) == 5


@pytest.mark.integration
@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"visual": [0.1] * 3}, "visual has 3 values, expected 1280"),
        ({"text": [0.1] * 5}, "text has 5 values, expected 512"),
        ({"k": 0}, "k=0 is out of range"),
        ({"k": 101}, "k=101 is out of range"),
        ({"mmr_lambda": 1.5}, "mmr_lambda=1.5 is out of range"),
        ({"popularity_debias": -1}, "popularity_debias=-1.0 is out of range"),
        ({"k": "ten"}, "valid integer"),
        ({"visual": "abc"}, "valid array"),
    ],
)
def test_bad_feature_requests_get_400_naming_the_problem(client, videos, body, message):
    r = client.post("/recommend_by_features", json={"visual": videos["visual"], **body})
    assert r.status_code == 400, r.text
    assert message in _error(r)


@pytest.mark.integration
@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("NaN", "visual[0] is nan"),
        ("Infinity", "visual[0] is inf"),
        ("1e999", "visual[0] is inf"),
    ],
)
def test_non_finite_vectors_get_400(client, raw, message):
    body = '{"visual": [' + ",".join([raw] + ["0.5"] * 1279) + "]}"
    r = client.post("/recommend_by_features", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert message in _error(r)


@pytest.mark.integration
def test_malformed_json_gets_400(client):
    headers = {"content-type": "application/json"}
    r = client.post("/recommend_by_features", content=b'{"visual": [0.1, ', headers=headers)
    assert r.status_code == 400
    assert "Invalid JSON" in _error(r)


# --- recommend_by_video ---------------------------------------------------------------------------------------


@pytest.mark.integration
def test_by_video_id_matches_the_same_vectors_sent_directly(client, videos):
    by_id = client.post("/recommend_by_video", json={"video_id": videos["text_id"], "k": 5})
    assert by_id.status_code == 200, by_id.text
    direct = client.post("/recommend_by_features", json={"visual": videos["visual"], "text": videos["text"], "k": 5})
    assert [i["music_id"] for i in by_id.json()["items"]] == [i["music_id"] for i in direct.json()["items"]]


@pytest.mark.integration
def test_by_video_id_without_description(client, videos):
    by_id = client.post("/recommend_by_video", json={"video_id": videos["notext_id"], "k": 4})
    assert by_id.status_code == 200, by_id.text
    direct = client.post("/recommend_by_features", json={"visual": videos["notext_visual"], "k": 4})
    assert [i["music_id"] for i in by_id.json()["items"]] == [i["music_id"] for i in direct.json()["items"]]


@pytest.mark.integration
def test_unknown_video_id_gets_404_naming_it(client):
    r = client.post("/recommend_by_video", json={"video_id": "no-such-video"})
    assert r.status_code == 404
    assert "no-such-video" in _error(r)


# --- recommend_by_upload --------------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.slow
def test_upload_with_and_without_description(client, clip):
    for data in ({"description": "a sunny day at the beach", "k": "4"}, {"k": "4"}):
        with clip.open("rb") as f:
            r = client.post("/recommend_by_upload", files={"video": ("clip.mp4", f, "video/mp4")}, data=data)
        assert r.status_code == 200, r.text
        assert len(r.json()["items"]) == 4


@pytest.mark.integration
@pytest.mark.parametrize(
    ("content", "status", "message"),
    [
        (b"", 400, "video upload is empty"),
        (b"definitely not a video" * 10, 400, "video upload could not be decoded"),
        (b"\0" * int(MAX_UPLOAD_MB * 2**20 + 1), 413, "over the limit"),
    ],
)
def test_bad_uploads(client, content, status, message):
    r = client.post("/recommend_by_upload", files={"video": ("v.mp4", content, "video/mp4")})
    assert r.status_code == status, r.text
    assert message in _error(r)


# --- catalog and refresh --------------------------------------------------------------------------------------


@pytest.mark.integration
def test_catalog_pages_and_bad_paging(client):
    r = client.post("/catalog", json={"offset": 5, "limit": 3})
    assert r.status_code == 200
    body = r.json()
    assert body["size"] == 40 and body["dim"] == 32 and len(body["items"]) == 3
    assert client.post("/catalog", json={"limit": 5000}).status_code == 400


@pytest.mark.integration
def test_refresh_adds_new_music_that_is_recommendable(client, served, videos):
    from bgmrec.data.contract import load_dataset

    mv = load_dataset(served["dataset"]).music_vectors
    top = client.post("/recommend_by_features", json={"visual": videos["visual"], "k": 1}).json()["items"][0]
    row = int(np.flatnonzero(mv.ids == top["music_id"])[0])
    before = client.post("/catalog", json={"limit": 0}).json()
    # A new clip with the features of the current best match must rank beside it.
    new = {"music_id": "new-clip", "title": "New clip", "audio_embedding": mv.audio_embedding[row].tolist(),
           "audio_lld": mv.audio_lld[row].tolist()}
    r = client.post("/refresh_catalog", headers=ADMIN, json={"music": [new]})
    assert r.status_code == 200, r.text
    assert r.json()["size"] == before["size"] + 1 and r.json()["version"] == before["version"] + 1
    ranked = client.post("/recommend_by_features", json={"visual": videos["visual"], "k": 2}).json()
    assert "new-clip" in [item["music_id"] for item in ranked["items"]]
    assert ranked["catalog_version"] == before["version"] + 1

    again = client.post("/refresh_catalog", headers=ADMIN, json={"music": [new]})
    assert again.status_code == 400 and "new-clip is already in the catalog" in _error(again)
    short = client.post("/refresh_catalog", headers=ADMIN,
                        json={"music": [{**new, "music_id": "x", "audio_lld": [1.0]}]})
    assert short.status_code == 400 and "audio_lld has 1 values" in _error(short)
    assert client.post("/refresh_catalog", headers=ADMIN, json={}).status_code == 400

    reloaded = client.post("/refresh_catalog", headers=ADMIN, json={"reload": True})
    assert reloaded.status_code == 200 and reloaded.json()["size"] == before["size"]


@pytest.mark.integration
def test_admin_routes_need_the_token_and_probes_stay_open(client):
    anonymous = client.post("/refresh_catalog", json={"reload": True})
    assert anonymous.status_code == 401  # BentoML words every 401/403 body "Authorization error" itself
    wrong = client.post("/refresh_catalog", headers={"Authorization": "Bearer guess"}, json={"reload": True})
    assert wrong.status_code == 403
    basic = client.post("/refresh_catalog", headers={"Authorization": "Basic eDp5"}, json={"reload": True})
    assert basic.status_code == 401
    for probe in ("/readyz", "/livez", "/healthz", "/metrics"):
        assert client.get(probe).status_code == 200, probe


def _wait_for(check, seconds: float = 10.0):
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


@pytest.mark.integration
def test_the_service_follows_its_registry_and_never_serves_an_inconsistent_catalog(client, client_registry):
    """A catalog file written by another process (the new-music-batch pipeline) is swapped in without a call;
    an empty catalog, or one embedded by another model than production's, is not: the last good one keeps
    serving until the registry is consistent again."""
    import dataclasses

    from bgmrec.catalog import MusicCatalog, load_catalog

    path = client_registry / "catalog.parquet"
    original = load_catalog(path)
    before = client.post("/catalog", json={"limit": 0}).json()
    try:
        row = original.embeddings[:1]
        original.add(["followed-1"], row, ["Followed"]).save(path)
        grown = _wait_for(lambda: client.post("/catalog", json={"limit": 0}).json()["size"] == before["size"] + 1)
        assert grown, "the new catalog file was not served within 10 s"

        for unservable in (
            dataclasses.replace(original.add(["other-model"], row), model_version="v9999-other"),
            MusicCatalog(np.array([], dtype=object), np.array([], dtype=object), np.zeros((0, original.dim)),
                         np.zeros(0), np.zeros(0, bool), model_version=original.model_version),
        ):
            unservable.save(path)
            time.sleep(1.0)  # five polls
            served = client.post("/catalog", json={"limit": 0}).json()
            assert served["size"] == before["size"] + 1 and served["model_version"] == before["model_version"]
    finally:
        original.save(path)
    assert _wait_for(lambda: client.post("/catalog", json={"limit": 0}).json()["size"] == before["size"])


@pytest.mark.integration
def test_metrics_show_diversity_and_errors(client, videos):
    for k in (3, 8):
        client.post("/recommend_by_features", json={"visual": videos["visual"], "k": k, "mmr_lambda": 0.5})
    client.post("/recommend_by_features", json={"visual": videos["visual"], "k": 0})
    deadline = time.monotonic() + 10
    while True:
        text = client.get("/metrics").text
        lists = _metric(text, "bgmrec_diversity_window_lists")
        if (lists or 0) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for name in ("coverage", "gini", "entropy", "intra_list_diversity", "new_share", "mean_popularity"):
        value = _metric(text, f"bgmrec_diversity_{name}")
        assert value is not None and np.isfinite(value), name
    assert 0 < _metric(text, "bgmrec_diversity_coverage") <= 1
    errors = _metric(text, "bgmrec_request_errors_total", '{endpoint="recommend_by_features",kind="k_out_of_range"}')
    assert errors and errors >= 1
    assert (_metric(text, "bgmrec_batch_size_count") or 0) >= 2  # every answered features request went through it
    assert 'endpoint="/recommend_by_features"' in text  # BentoML's request metrics cover the fast lane's route
    assert "bentoml_service_request_total" in text or "bentoml_service_request_duration_seconds" in text


def _samples(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (0 if none)."""
    total = 0.0
    for match in re.finditer(rf"^{re.escape(name)}{{(.*?)}} ([-+0-9.eEinfa]+)$", text, flags=re.MULTILINE):
        have = dict(re.findall(r'(\w+)="(.*?)"', match.group(1)))
        if all(have.get(key) == value for key, value in labels.items()):
            total += float(match.group(2))
    return total


@pytest.mark.integration
def test_features_route_is_answered_in_front_of_bentoml_with_its_request_metrics(client, videos):
    assert type(client.app).__name__ == "FastLane"  # what Svc.to_asgi() (and so `bentoml serve`) serves
    route = {"endpoint": "/recommend_by_features"}
    before = client.get("/metrics").text
    for k in (2, 3, 4):
        assert client.post("/recommend_by_features", json={"visual": videos["visual"], "k": k}).status_code == 200
    assert client.post("/recommend_by_features", json={"visual": [0.5] * 3}).status_code == 400
    after = client.get("/metrics").text
    total = "bentoml_service_request_total"
    assert _samples(after, total, **route, http_response_code="200") - _samples(
        before, total, **route, http_response_code="200") == 3
    assert _samples(after, total, **route, http_response_code="400") - _samples(
        before, total, **route, http_response_code="400") == 1
    count = "bentoml_service_request_duration_seconds_count"
    assert _samples(after, count, **route) - _samples(before, count, **route) == 4
    assert _samples(after, "bentoml_service_request_in_progress", **route) == 0
    # the other endpoints still go through BentoML's own middlewares and metrics
    client.post("/catalog", json={"limit": 1})
    assert _samples(client.get("/metrics").text, total, endpoint="/catalog", http_response_code="200") >= 1


@pytest.mark.integration
def test_fast_lane_and_the_bentoml_mount_give_the_same_answers(client, videos):
    """With the lane off (BGMREC_FAST_LANE=false) the route's BentoML mount answers: BentoML's app behind the lane
    is that configuration, so every answer, good or bad, must be the same through both."""
    from starlette.testclient import TestClient

    assert client.app.routes.keys() == {"/recommend_by_features"}
    mounted = TestClient(client.app.app)  # BentoML's app itself (its lifespan already ran under `client`)
    bodies = [
        {"visual": videos["visual"], "text": videos["text"], "k": 6},
        {"visual": videos["visual"], "k": 4, "mmr_lambda": 0.3, "popularity_debias": 1.0, "exclude": ["m0001"]},
        {"visual": [int(v > 0) for v in videos["visual"]], "k": 3},  # integers are numbers too
        {"visual": videos["visual"], "k": "5"},  # pydantic's lax integer, through the validating path
        {"visual": videos["visual"], "text": [0.1] * 5},
        {"visual": videos["visual"], "k": 0},
        {"visual": [[0.1]] * 1280},
        {"visual": videos["visual"], "exclude": "m0001"},
        ["not", "an", "object"],
    ]
    raw = [b'{"visual": [0.1, ', b"", ("{\"visual\": [NaN" + ", 0.5" * 1279 + "]}").encode()]
    headers = {"content-type": "application/json"}
    for body in bodies + raw:
        kwargs = {"content": body, "headers": headers} if isinstance(body, bytes) else {"json": body}
        lane, mount = client.post("/recommend_by_features", **kwargs), mounted.post("/recommend_by_features", **kwargs)
        assert (lane.status_code, lane.json()) == (mount.status_code, mount.json()), str(body)[:200]
        assert lane.status_code in (200, 400), lane.text
    assert client.post("/recommend_by_features", json={"visual": videos["visual"], "k": "5"}).json()["k"] == 5
    for other in (client, mounted):
        assert other.get("/recommend_by_features").status_code == 405


@pytest.mark.integration
def test_features_body_over_the_limit_gets_413_naming_it(client, videos):
    body = b'{"visual": [' + b",".join([b"0.123456789"] * 400_000) + b"]}"  # ~4.8 MB, over the 4 MiB default
    r = client.post("/recommend_by_features", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "more than 4194304 bytes" in _error(r)
    assert client.post("/recommend_by_features", json={"visual": videos["visual"]}).status_code == 200


@pytest.mark.unit
def test_fast_lane_answers_500_when_its_endpoint_fails_and_passes_everything_else_on():
    import asyncio

    fastlane = _serving_module("fastlane")
    seen: list[str] = []

    async def behind(scope, receive, send):
        seen.append(scope["type"] if scope["type"] != "http" else scope["path"])

    async def broken(scope, receive, send):
        raise RuntimeError("a bug")

    lane = fastlane.FastLane(behind, {"/hot": broken}, access_log=False)
    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def scenario():
        await lane({"type": "lifespan"}, receive, send)
        await lane({"type": "http", "path": "/other", "method": "POST"}, receive, send)
        await lane({"type": "http", "path": "/hot", "method": "POST"}, receive, send)

    asyncio.run(scenario())
    assert seen == ["lifespan", "/other"]
    assert sent[0]["status"] == 500 and b"Internal Server Error" in sent[1]["body"]


# --- `bgmrec serve` over real HTTP ----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server_process(served, tmp_path_factory):
    """`bgmrec serve` started in a subprocess (own process group, stopped at the end); it warms up meanwhile."""
    port = _free_port()
    env = {**os.environ, "BENTOML_HOME": str(tmp_path_factory.mktemp("bentoml_home")),
           "BGMREC_MONITOR_INTERVAL_S": "0.2", "BGMREC_ADMIN_TOKEN": ADMIN_TOKEN}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "bgmrec"), "serve", "--registry", str(served["registry"]),
             "--feast-repo", str(served["feast"]), "--port", str(port)],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        yield process, f"http://127.0.0.1:{port}", log_path
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def server(server_process) -> str:
    """The base URL of the `bgmrec serve` subprocess, once /readyz answers 200."""
    import httpx

    process, url, log_path = server_process
    deadline = time.monotonic() + 180
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"bgmrec serve exited with {process.returncode}: {log_path.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return url
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"bgmrec serve not ready after 180 s: {log_path.read_text()[-3000:]}")
        time.sleep(0.5)


@pytest.mark.integration
@pytest.mark.slow
def test_bgmrec_serve_over_http(server, served, videos, clip):
    import httpx

    from bgmrec.data.contract import load_dataset

    with httpx.Client(base_url=server, timeout=60) as http:
        before = http.get("/metrics").text
        assert _metric(before, "bgmrec_catalog_size") == 40
        features = http.post("/recommend_by_features", json={"visual": videos["visual"], "k": 5})
        assert features.status_code == 200 and len(features.json()["items"]) == 5
        by_id = http.post("/recommend_by_video", json={"video_id": videos["notext_id"], "k": 5, "mmr_lambda": 0.3})
        assert by_id.status_code == 200, by_id.text
        with clip.open("rb") as f:
            upload = http.post("/recommend_by_upload", files={"video": ("clip.mp4", f, "video/mp4")}, data={"k": "3"})
        assert upload.status_code == 200, upload.text
        assert http.post("/recommend_by_video", json={"video_id": "nope"}).status_code == 404
        assert http.post("/catalog", json={"limit": 2}).json()["size"] == 40

        # Requests in flight while the catalog is refreshed are all answered.
        statuses: list[int] = []
        stop = threading.Event()

        def hammer() -> None:
            with httpx.Client(base_url=server, timeout=60) as own:
                while not stop.is_set():
                    statuses.append(own.post("/recommend_by_features", json={"visual": videos["visual"]}).status_code)

        workers = [threading.Thread(target=hammer) for _ in range(4)]
        for worker in workers:
            worker.start()
        time.sleep(0.5)
        rng = np.random.default_rng(0)
        dims = load_dataset(served["dataset"]).music_vectors.dims
        for i in range(3):
            music = {"music_id": f"batch-{i}", "audio_embedding": rng.standard_normal(dims["audio_embedding"]).tolist(),
                     "audio_lld": rng.standard_normal(dims["audio_lld"]).tolist()}
            assert http.post("/refresh_catalog", headers=ADMIN, json={"music": [music]}).status_code == 200
            time.sleep(0.3)
        stop.set()
        for worker in workers:
            worker.join()
        assert statuses and set(statuses) == {200}, f"{len(statuses)} requests, statuses {set(statuses)}"
        only_new = http.post("/recommend_by_features", json={
            "visual": videos["visual"], "k": 3,
            "exclude": [item["music_id"] for item in http.post("/catalog", json={"limit": 40}).json()["items"]]})
        assert sorted(item["music_id"] for item in only_new.json()["items"]) == ["batch-0", "batch-1", "batch-2"]

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            after = http.get("/metrics").text
            if (_metric(after, "bgmrec_diversity_window_lists") or 0) >= min(1000, len(statuses) + 4):
                break
            time.sleep(0.2)
        assert _metric(after, "bgmrec_catalog_size") == 43
        assert (_metric(after, "bgmrec_diversity_window_lists") or 0) > (
            _metric(before, "bgmrec_diversity_window_lists") or 0)
        assert _metric(after, "bgmrec_diversity_coverage") != _metric(before, "bgmrec_diversity_coverage")
        assert _metric(after, "bgmrec_request_errors_total", '{endpoint="recommend_by_video",kind="unknown_video"}')
        # the features route is served by the fast lane in front of BentoML, with BentoML's request metrics
        assert _samples(after, "bentoml_service_request_total", endpoint="/recommend_by_features",
                        http_response_code="200") >= len(statuses) + 2
        assert _samples(after, "bentoml_service_request_total", endpoint="/recommend_by_video",
                        http_response_code="404") >= 1


# --- k8s monitoring refers to metrics the service exports ---------------------------------------------------


def _monitor_module():
    from serving import monitor

    return monitor


@pytest.mark.unit
def test_alert_rules_and_dashboard_use_exported_metrics():
    import json

    import yaml

    monitor = _monitor_module()
    gauges = [*monitor.DIVERSITY_GAUGES.values(), monitor.WINDOW_LISTS, monitor.CATALOG_SIZE, monitor.CATALOG_VERSION]
    exported = {g._name for g in gauges} | {f"{c._name}_total" for c in (monitor.REQUEST_ERRORS,
                                                                          monitor.RECOMMENDATIONS)}
    monitoring = ROOT / "k8s" / "base" / "monitoring"
    rules = yaml.safe_load((monitoring / "prometheus-rules.yaml").read_text())
    exprs = [rule["expr"] for group in rules["spec"]["groups"] for rule in group["rules"]]
    dashboard = json.loads((monitoring / "grafana-dashboard.json").read_text())
    exprs += [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = {name for expr in exprs for name in re.findall(r"\bbgmrec_[a-z_]+", expr)}
    assert used and used <= exported, f"unknown metrics: {sorted(used - exported)}"
    assert {f"bgmrec_diversity_{name}" for name in monitor.DIVERSITY_FIELDS} <= used


# --- request path pieces: micro-batching and the diversity window ---------------------------------------------


def _serving_module(name: str):
    """A module of the serving package."""
    import importlib

    return importlib.import_module(f"serving.{name}")


@pytest.mark.unit
def test_micro_batcher_answers_concurrent_requests_in_one_call():
    import asyncio

    batching = _serving_module("batching")
    calls: list[list[int]] = []

    def process(items: list[int]) -> list:
        calls.append(items)
        return [ValueError(f"bad item {i}") if i < 0 else i * 10 for i in items]

    batcher = batching.MicroBatcher(process, max_batch=64)

    async def scenario():
        alone = await batcher.submit(1)
        together = await asyncio.gather(*(batcher.submit(i) for i in range(2, 12)), return_exceptions=True)
        mixed = await asyncio.gather(batcher.submit(5), batcher.submit(-1), return_exceptions=True)
        return alone, together, mixed

    alone, together, mixed = asyncio.run(scenario())
    assert alone == 10 and calls[0] == [1]
    assert together == [i * 10 for i in range(2, 12)] and calls[1] == list(range(2, 12))
    assert mixed[0] == 50 and isinstance(mixed[1], ValueError) and "bad item -1" in str(mixed[1])


@pytest.mark.unit
def test_micro_batcher_caps_the_batch_and_fails_every_caller_when_the_call_fails():
    import asyncio

    batching = _serving_module("batching")
    sizes: list[int] = []
    capped = batching.MicroBatcher(lambda items: items, max_batch=4, on_batch=sizes.append)
    broken = batching.MicroBatcher(lambda items: 1 / 0)

    async def scenario():
        got = await asyncio.gather(*(capped.submit(i) for i in range(10)))
        failed = await asyncio.gather(broken.submit(1), broken.submit(2), return_exceptions=True)
        return got, failed

    got, failed = asyncio.run(scenario())
    assert got == list(range(10)) and max(sizes) == 4 and sum(sizes) == 10
    assert all(isinstance(f, ZeroDivisionError) for f in failed)


@pytest.mark.unit
def test_diversity_window_matches_metrics_diversity():
    """The monitor scores each list's intra-list diversity once; the window's figures equal
    bgmrec.metrics.diversity over the same lists (per list length, weighted by list count)."""
    from bgmrec.catalog import MusicCatalog
    from bgmrec.metrics import diversity

    monitor = _monitor_module()
    rng = np.random.default_rng(0)
    n = 200
    ids = np.array([f"m{i}" for i in range(n)], dtype=object)
    catalog = MusicCatalog(ids, ids, rng.standard_normal((n, 16)), rng.integers(0, 50, n).astype(float),
                           rng.random(n) < 0.2)
    lists = [rng.choice(n, size, replace=False) for size in [10] * 30 + [4] * 10 + [1] * 5]
    window = monitor.DiversityMonitor(catalog, window=40, interval=0)
    for rows in lists[:20]:
        window.record(rows)
    window.update()
    for rows in lists[20:]:
        window.record(rows)
    got = window.update()
    kept = lists[-40:]  # the window keeps the last 40 lists
    slots = np.concatenate(kept)[:, None]
    expected = diversity(slots, n, popularity=catalog.popularity, is_new=catalog.is_new)
    by_length = [np.stack([r for r in kept if len(r) == size]) for size in (10, 4)]
    ild = [diversity(group, n, embeddings=catalog.embeddings)["intra_list_diversity"] for group in by_length]
    expected["intra_list_diversity"] = (ild[0] * len(by_length[0]) + ild[1] * len(by_length[1])) / (
        len(by_length[0]) + len(by_length[1]))
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, rel=1e-5), name
