"""The BentoML recommender: every endpoint and every bad input in-process (ASGI), then `bgmrec serve` over HTTP.

The model is a real CMVAE trained for one epoch on a tiny simulated dataset whose visual/text widths are the media
extractors' (so uploads embed into the model's input space); video vectors come from a real Feast repo.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
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
    from bgmrec.media.extractors import create_extractor
    from bgmrec.models import create_model
    from bgmrec.models.base import TrainingData
    from bgmrec.registry import ModelRegistry
    from bgmrec.steps import build_catalog_step
    from bgmrec.train import fit

    base = tmp_path_factory.mktemp("serving")
    dataset = base / "dataset"
    config = ExtractionConfig()
    dims = {kind: create_extractor(kind, config).dim for kind in ("visual", "text")}
    simulate("tiny", seed=0, out=dataset, dims=dims)
    ds = load_dataset(dataset)
    model = create_model("cmvae", {"epochs": 1, "progress": False, "latent_dim": 32, "hidden": 32})
    fit(model, TrainingData(ds, make_split(ds, "strong", 0)))
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


def _features(client, **query):
    """POST one query to /recommend_by_features (its body holds a list of queries)."""
    return client.post("/recommend_by_features", json={"queries": [query]})


def _items(response) -> list[dict]:
    assert response.status_code == 200, response.text
    return response.json()[0]["items"]


def _same_ranking(got: list[dict], expected: list[dict]) -> bool:
    """The same music in the same order with the same scores (float32: a batched matrix product may round the
    last bits differently from a single query's)."""
    return ([i["music_id"] for i in got] == [i["music_id"] for i in expected]
            and [i["score"] for i in got] == pytest.approx([i["score"] for i in expected], abs=1e-6))


@pytest.mark.integration
def test_features_returns_k_ranked_music_from_the_catalog(client, videos):
    r = _features(client, visual=videos["visual"], text=videos["text"], k=7)
    assert r.status_code == 200, r.text
    (body,) = r.json()
    assert len(body["items"]) == 7 and body["k"] == 7 and body["model_version"].startswith("v0001")
    scores = [item["score"] for item in body["items"]]
    assert scores == sorted(scores, reverse=True) and all(-1.0 <= s <= 1.0 for s in scores)
    catalog = client.post("/catalog", json={"limit": 1000}).json()
    known = {item["music_id"]: item["title"] for item in catalog["items"]}
    assert all(known[item["music_id"]] == item["title"] for item in body["items"])


@pytest.mark.integration
def test_several_queries_in_one_request_get_one_list_each(client, videos):
    queries = [{"visual": videos["visual"], "text": videos["text"], "k": 3},
               {"visual": videos["notext_visual"], "k": 6}]
    r = client.post("/recommend_by_features", json={"queries": queries})
    assert r.status_code == 200, r.text
    assert [len(answer["items"]) for answer in r.json()] == [3, 6]
    assert _same_ranking(r.json()[1]["items"], _items(_features(client, visual=videos["notext_visual"], k=6)))


@pytest.mark.integration
def test_features_without_text_works(client, videos):
    assert len(_items(_features(client, visual=videos["visual"], k=5))) == 5


@pytest.mark.integration
def test_options_exclude_mmr_and_debias(client, videos):
    plain = _items(_features(client, visual=videos["visual"], k=5))
    excluded = [plain[0]["music_id"], plain[1]["music_id"]]
    ids = [item["music_id"] for item in _items(_features(client, visual=videos["visual"], k=5, exclude=excluded))]
    assert len(ids) == 5 and not set(ids) & set(excluded)
    assert ids[:3] == [item["music_id"] for item in plain[2:]]
    for options in ({"mmr_lambda": 0.0}, {"popularity_debias": 5.0}):
        assert len(_items(_features(client, visual=videos["visual"], k=5, **options))) == 5


@pytest.mark.integration
@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"visual": [0.1] * 3}, "visual has 3 values, expected 1280"),
        ({"text": [0.1] * 5}, "text has 5 values, expected 512"),
        ({"k": 0}, "greater than or equal to 1"),
        ({"k": 101}, "k=101 is out of range: it must be between 1 and 100"),
        ({"mmr_lambda": 1.5}, "less than or equal to 1"),
        ({"popularity_debias": -1}, "greater than or equal to 0"),
        ({"popularity_debias": 1e39}, "less than or equal to 100"),
        ({"k": "ten"}, "valid integer"),
        ({"k": "5"}, "valid integer"),  # strict: a numeric string is not a number
        ({"k": True}, "valid integer"),
        ({"mmr_lambda": True}, "valid number"),
        ({"visual": "abc"}, "valid array"),
        ({"visual": [1e30] * 1280}, "visual[0] is 1e+30: values must be within"),
        ({"exclude": "m0001"}, "valid array"),
        ({"exclude": ["x" * 300]}, "at most 256 characters"),
        ({"colour": "blue"}, "Extra inputs are not permitted"),
    ],
)
def test_bad_feature_requests_get_400_naming_the_problem(client, videos, query, message):
    r = _features(client, **{"visual": videos["visual"], **query})
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
    body = '{"queries": [{"visual": [' + ",".join([raw] + ["0.5"] * 1279) + "]}]}"
    r = client.post("/recommend_by_features", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert message in _error(r)


@pytest.mark.integration
def test_features_body_over_the_limit_gets_413_naming_it(client, videos):
    body = b'{"queries": [{"visual": [' + b",".join([b"0.123456789"] * 400_000) + b"]}]}"  # ~4.8 MB > 4 MiB
    r = client.post("/recommend_by_features", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "over the limit of 4194304 bytes" in _error(r)
    assert _features(client, visual=videos["visual"]).status_code == 200


# --- recommend_by_video ---------------------------------------------------------------------------------------


@pytest.mark.integration
def test_by_video_id_matches_the_same_vectors_sent_directly(client, videos):
    by_id = client.post("/recommend_by_video", json={"video_id": videos["text_id"], "k": 5})
    assert by_id.status_code == 200, by_id.text
    direct = _items(_features(client, visual=videos["visual"], text=videos["text"], k=5))
    assert [i["music_id"] for i in by_id.json()["items"]] == [i["music_id"] for i in direct]


@pytest.mark.integration
def test_by_video_id_without_description(client, videos):
    by_id = client.post("/recommend_by_video", json={"video_id": videos["notext_id"], "k": 4})
    assert by_id.status_code == 200, by_id.text
    direct = _items(_features(client, visual=videos["notext_visual"], k=4))
    assert [i["music_id"] for i in by_id.json()["items"]] == [i["music_id"] for i in direct]


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
    assert "/tmp" not in r.text and "v.mp4" not in r.text, "an error body names a server path"


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
    top = _items(_features(client, visual=videos["visual"], k=1))[0]
    row = int(np.flatnonzero(mv.ids == top["music_id"])[0])
    before = client.post("/catalog", json={"limit": 0}).json()
    # A new clip with the features of the current best match must rank beside it.
    new = {"music_id": "new-clip", "title": "New clip", "audio_embedding": mv.audio_embedding[row].tolist(),
           "audio_lld": mv.audio_lld[row].tolist()}
    r = client.post("/refresh_catalog", headers=ADMIN, json={"music": [new]})
    assert r.status_code == 200, r.text
    assert r.json()["size"] == before["size"] + 1 and r.json()["version"] == before["version"] + 1
    (ranked,) = _features(client, visual=videos["visual"], k=2).json()
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
        _features(client, visual=videos["visual"], k=k, mmr_lambda=0.5)
    client.post("/recommend_by_video", json={"video_id": "no-such-video"})
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
    errors = _metric(text, "bgmrec_request_errors_total", '{endpoint="recommend_by_video",kind="unknown_video"}')
    assert errors and errors >= 1
    assert (_metric(text, "bgmrec_batch_size_count") or 0) >= 2  # every answered features batch is observed
    assert _samples(text, "bentoml_service_request_total", endpoint="/recommend_by_features") >= 2


def _samples(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (0 if none)."""
    total = 0.0
    for match in re.finditer(rf"^{re.escape(name)}{{(.*?)}} ([-+0-9.eEinfa]+)$", text, flags=re.MULTILINE):
        have = dict(re.findall(r'(\w+)="(.*?)"', match.group(1)))
        if all(have.get(key) == value for key, value in labels.items()):
            total += float(match.group(2))
    return total


@pytest.mark.integration
@pytest.mark.parametrize(
    ("route", "content_type", "body"),
    [
        # a multipart content type without its boundary, on every route (BentoML's parser raised: 500 before)
        *[(route, "multipart/form-data", b"abc") for route in
          ("/recommend_by_features", "/recommend_by_upload", "/recommend_by_video", "/catalog", "/refresh_catalog")],
        # a multipart body without the file, and one cut short
        ("/recommend_by_upload", "multipart/form-data; boundary=XX",
         b'--XX\r\nContent-Disposition: form-data; name="k"\r\n\r\n3\r\n--XX--\r\n'),
        ("/recommend_by_upload", "multipart/form-data; boundary=XX", b'--XX\r\nContent-Disposition: form-da'),
        ("/recommend_by_upload", "application/json", b'{"video": "/etc/passwd"}'),
        # wrong JSON, wrong content types
        ("/recommend_by_features", "application/json", b'{"queries": [{"visual": [0.1, '),
        ("/recommend_by_features", "application/json", b""),
        ("/recommend_by_features", "text/plain", b"hello"),
        ("/recommend_by_features", "application/x-www-form-urlencoded", b"queries=1"),
        ("/recommend_by_video", "application/json", b'{"video_id": 12}'),
        ("/recommend_by_video", "application/json", b'{"video_id": ""}'),
        ("/catalog", "application/json", b'{"offset": -1}'),
        ("/catalog", "application/json", b'{"limit": 1e9}'),
        ("/catalog", "application/json", b"[1, 2]"),
    ],
)
def test_no_request_a_client_can_send_gets_a_5xx(client, route, content_type, body):
    r = client.post(route, content=body, headers={"content-type": content_type})
    assert 400 <= r.status_code < 500, f"{route} {content_type} {body[:60]!r}: {r.status_code} {r.text[:300]}"
    assert _error(r), r.text


@pytest.mark.integration
def test_every_route_is_in_the_openapi_schema_with_typed_inputs(client):
    spec = client.get("/docs.json").json()
    for route in ("/recommend_by_features", "/recommend_by_video", "/recommend_by_upload", "/catalog",
                  "/refresh_catalog"):
        assert "post" in spec["paths"][route], route
    schemas = spec["components"]["schemas"]
    query = schemas["FeaturesQuery"]
    assert {"visual", "text", "k", "exclude", "mmr_lambda", "popularity_debias"} <= set(query["properties"])
    assert len(query["example"]["visual"]) == 1280 and len(query["example"]["text"]) == 512
    assert "RecommendationList" in schemas


@pytest.mark.integration
def test_concurrent_feature_requests_are_batched_by_bentoml(client, videos):
    """BentoML's adaptive batching joins the queries of concurrent requests into one call of the batch function
    (bgmrec_batch_size observes each call's size); every request still gets exactly its own answer."""
    from concurrent.futures import ThreadPoolExecutor

    def batch_sizes() -> tuple[float, float]:
        text = client.get("/metrics").text
        return _metric(text, "bgmrec_batch_size_count") or 0.0, _metric(text, "bgmrec_batch_size_sum") or 0.0

    expected = {k: _items(_features(client, visual=videos["visual"], k=k)) for k in range(1, 9)}
    calls_before, queries_before = batch_sizes()
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda k: (k, _items(_features(client, visual=videos["visual"], k=k))),
                                [k for _ in range(8) for k in range(1, 9)]))
    assert all(_same_ranking(items, expected[k]) for k, items in answers)
    calls, queries = batch_sizes()
    assert queries - queries_before == 64
    assert calls - calls_before < 64, "no two concurrent requests were ever batched together"


# --- `bgmrec serve` over real HTTP ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server_process(served, start_server, tmp_path_factory):
    """`bgmrec serve` started in a subprocess (own process group, stopped at the end); it warms up meanwhile."""
    env = {**os.environ, "BENTOML_HOME": str(tmp_path_factory.mktemp("bentoml_home")),
           "BGMREC_MONITOR_INTERVAL_S": "0.2", "BGMREC_ADMIN_TOKEN": ADMIN_TOKEN}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    server = start_server([str(Path(sys.executable).parent / "bgmrec"), "serve", "--registry",
                           str(served["registry"]), "--feast-repo", str(served["feast"])],
                          env, tmp_path_factory.mktemp("serve") / "serve.log")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def server(server_process) -> str:
    """The base URL of the `bgmrec serve` subprocess, once /readyz answers 200."""
    return server_process.wait_ready()


@pytest.mark.integration
@pytest.mark.slow
def test_bgmrec_serve_over_http(server, served, videos, clip):
    import httpx

    from bgmrec.data.contract import load_dataset

    with httpx.Client(base_url=server, timeout=60) as http:
        before = http.get("/metrics").text
        assert _metric(before, "bgmrec_catalog_size") == 40
        assert len(_items(_features(http, visual=videos["visual"], k=5))) == 5
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
                    statuses.append(_features(own, visual=videos["visual"]).status_code)

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
        only_new = _items(_features(http, visual=videos["visual"], k=3, exclude=[
            item["music_id"] for item in http.post("/catalog", json={"limit": 40}).json()["items"]]))
        assert sorted(item["music_id"] for item in only_new) == ["batch-0", "batch-1", "batch-2"]

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
        assert _samples(after, "bentoml_service_request_total", endpoint="/recommend_by_features",
                        http_response_code="200") >= len(statuses) + 2
        assert _samples(after, "bentoml_service_request_total", endpoint="/recommend_by_video",
                        http_response_code="404") >= 1


@pytest.mark.integration
@pytest.mark.slow
def test_bentoml_clients_call_every_route(server, videos, clip):
    """BentoML's own clients, as a program would use them: typed answers, no hand-made HTTP."""
    import bentoml

    with bentoml.SyncHTTPClient(server) as sync:
        (answer,) = sync.recommend_by_features(queries=[{"visual": videos["visual"], "text": videos["text"], "k": 4}])
        assert len(answer["items"]) == 4 and answer["k"] == 4
        by_id = sync.recommend_by_video(video_id=videos["text_id"], k=3)
        assert [i["music_id"] for i in by_id["items"]] == [i["music_id"] for i in answer["items"][:3]]
        assert len(sync.recommend_by_upload(video=clip, description="a beach", k=2)["items"]) == 2
        assert sync.catalog_info(limit=1)["size"] >= 40


@pytest.mark.integration
@pytest.mark.slow
def test_bgmrec_recommend_prints_a_ranked_table(server, videos, clip):
    from typer.testing import CliRunner

    from bgmrec.cli import app

    uploaded = CliRunner().invoke(app, ["recommend", "--url", server, "--video", str(clip), "--description",
                                        "una playa al atardecer", "-k", "3"], terminal_width=200)
    assert uploaded.exit_code == 0, uploaded.output
    assert [line for line in uploaded.output.splitlines() if re.match(r"^\W*[123] ", line)], uploaded.output
    by_id = CliRunner().invoke(app, ["recommend", "--url", server, "--video-id", videos["text_id"]],
                               terminal_width=200)
    assert by_id.exit_code == 0 and "m000" in by_id.output and "10 " in by_id.output, by_id.output
    unknown = CliRunner().invoke(app, ["recommend", "--url", server, "--video-id", "no-such-video"])
    assert unknown.exit_code == 1 and "no-such-video" in unknown.output
    both = CliRunner().invoke(app, ["recommend", "--url", server, "--video", str(clip), "--video-id", "x"])
    assert both.exit_code == 1 and "exactly one of" in both.output


# --- k8s monitoring refers to metrics the service exports ---------------------------------------------------


def _monitor_module():
    from serving import monitor

    return monitor


@pytest.mark.unit
def test_alert_rules_and_dashboard_use_exported_metrics():
    import json

    import yaml

    monitor = _monitor_module()
    gauges = [*monitor.DIVERSITY_GAUGES.values(), monitor.WINDOW_LISTS, monitor.CATALOG_SIZE, monitor.CATALOG_VERSION,
              monitor.MODEL_INFO]
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


# --- the diversity window ------------------------------------------------------------------------------------


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


@pytest.mark.unit
def test_client_errors_are_one_warning_line_and_server_errors_keep_their_traceback():
    import logging

    from bentoml.exceptions import NotFound
    from pydantic import BaseModel

    from serving.client_errors import ClientErrorFilter

    class Body(BaseModel):
        k: int

    def record(exc: BaseException) -> logging.LogRecord:
        try:
            raise exc
        except BaseException:
            return logging.LogRecord("bentoml", logging.ERROR, __file__, 1, "Exception on %s [POST]",
                                     ("/catalog",), sys.exc_info())

    try:
        Body.model_validate({"k": "x"})
    except Exception as exc:  # noqa: BLE001
        invalid = record(exc)
    for client_error in (invalid, record(NotFound("video_id 'x' is not in the feature store"))):
        assert ClientErrorFilter().filter(client_error)
        assert client_error.levelno == logging.WARNING and client_error.exc_info is None
        assert "\n" not in client_error.getMessage() and "Exception on /catalog [POST]: 4" in client_error.getMessage()
    bug = record(ZeroDivisionError("division by zero"))
    assert ClientErrorFilter().filter(bug)
    assert bug.levelno == logging.ERROR and bug.exc_info is not None
