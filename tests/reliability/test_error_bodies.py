"""Hostile requests against a running `bgmrec serve`: each gets a 4xx whose body is the one error shape the service
declares (`{"error": "<what was wrong>"}`, the schema /docs.json gives its error responses; serving/guard.py), never
a 5xx, and no body names a path on the server. Then schemathesis generates requests from /docs.json: no 5xx, and
every answer matches the schema declared for its status.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.reliability, pytest.mark.integration, pytest.mark.slow]

BIN = Path(sys.executable).parent
ADMIN_TOKEN = "error-bodies-admin-token"
MAX_UPLOAD_MB = 0.1
# Examples per operation for schemathesis: 300 makes ~1,900 cases over the 9 operations (--examples-only more).
FUZZ_EXAMPLES = int(os.environ.get("BGMREC_FUZZ_EXAMPLES", "300"))


@pytest.fixture(scope="module")
def server(music_world, world_feature_repo, start_server, tmp_path_factory):
    """`bgmrec serve` of a copy of the music world's registry, with its Feast repo and an admin token; yields
    (base URL, registry, server's BENTOML_HOME)."""

    root = tmp_path_factory.mktemp("error-bodies")
    registry = Path(shutil.copytree(music_world.registry_dir, root / "registry"))
    home = root / "bentoml_home"
    env = {**os.environ, "BENTOML_HOME": str(home), "BGMREC_ADMIN_TOKEN": ADMIN_TOKEN,
           "BGMREC_MAX_UPLOAD_MB": str(MAX_UPLOAD_MB), "BGMREC_ACCESS_LOG": "false"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    server = start_server([str(BIN / "bgmrec"), "serve", "--registry", str(registry), "--feast-repo",
                           str(world_feature_repo)], env, root / "serve.log")
    try:
        yield server.wait_ready(240), registry, home
    finally:
        server.stop(30)


def _multipart(boundary: str, *parts: tuple[str, str | None, bytes]) -> bytes:
    body = b""
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + content + b"\r\n"
    return body + f"--{boundary}--\r\n".encode()


def _vector(value: float, n: int = 1280) -> str:
    return "[" + ", ".join([repr(value) if isinstance(value, float) else str(value)] * n) + "]"


JSON = "application/json"
FORM = "multipart/form-data; boundary=XX"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
# (what, method, route, content type, body, extra headers, expected status)
HOSTILE = [
    ("plain text to a JSON route", "POST", "/recommend_by_features", "text/plain", b"hello", {}, 400),
    ("XML to a JSON route", "POST", "/catalog", "application/xml", b"<catalog/>", {}, 400),
    ("form-encoded to a JSON route", "POST", "/recommend_by_features", "application/x-www-form-urlencoded",
     b"queries=1", {}, 400),
    *[(f"multipart without boundary on {route}", "POST", route, "multipart/form-data", b"abc", {}, 400)
      for route in ("/recommend_by_features", "/recommend_by_upload", "/recommend_by_video", "/catalog",
                    "/refresh_catalog")],
    ("multipart without the file", "POST", "/recommend_by_upload", FORM, _multipart("XX", ("k", None, b"3")), {},
     400),
    ("multipart cut short", "POST", "/recommend_by_upload", FORM, b'--XX\r\nContent-Disposition: form-da', {}, 400),
    ("multipart with an empty file", "POST", "/recommend_by_upload", FORM,
     _multipart("XX", ("video", "clip.mp4", b"")), {}, 400),
    ("multipart with a file that is no video", "POST", "/recommend_by_upload", FORM,
     _multipart("XX", ("video", "clip.mp4", b"\x00not a video" * 100)), {}, 400),
    ("a server path as the file", "POST", "/recommend_by_upload", JSON, b'{"video": "/etc/passwd"}', {}, 400),
    ("truncated JSON", "POST", "/recommend_by_features", JSON, b'{"queries": [{"visual": [0.1, ', {}, 400),
    ("empty body", "POST", "/recommend_by_features", JSON, b"", {}, 400),
    ("a JSON list for an object", "POST", "/catalog", JSON, b"[1, 2]", {}, 400),
    ("a string for the queries", "POST", "/recommend_by_features", JSON, b'{"queries": "all"}', {}, 400),
    ("a number for a video id", "POST", "/recommend_by_video", JSON, b'{"video_id": 12}', {}, 400),
    ("a string for k", "POST", "/recommend_by_features", JSON,
     f'{{"queries": [{{"visual": {_vector(0.1)}, "k": "5"}}]}}'.encode(), {}, 400),
    ("an unknown field", "POST", "/recommend_by_features", JSON,
     f'{{"queries": [{{"visual": {_vector(0.1)}, "colour": "red"}}]}}'.encode(), {}, 400),
    ("1e30 in a vector", "POST", "/recommend_by_features", JSON,
     f'{{"queries": [{{"visual": {_vector(1e30)}}}]}}'.encode(), {}, 400),
    ("1e999 in a vector", "POST", "/recommend_by_features", JSON,
     f'{{"queries": [{{"visual": {_vector("1e999")}}}]}}'.encode(), {}, 400),
    ("NaN in a vector", "POST", "/recommend_by_features", JSON,
     f'{{"queries": [{{"visual": {_vector("NaN")}}}]}}'.encode(), {}, 400),
    ("a vector of the wrong length", "POST", "/recommend_by_features", JSON,
     f'{{"queries": [{{"visual": {_vector(0.1, 3)}}}]}}'.encode(), {}, 400),
    ("k over the server's max", "POST", "/recommend_by_features", JSON,
     f'{{"queries": [{{"visual": {_vector(0.1)}, "k": 1000}}]}}'.encode(), {}, 400),
    ("65 queries in one request", "POST", "/recommend_by_features", JSON,
     json.dumps({"queries": [{"visual": [0.1] * 1280}] * 65}).encode(), {}, 400),
    ("a JSON body over the size limit", "POST", "/recommend_by_features", JSON,
     b'{"queries": [{"visual": [' + b"0.1, " * 1_000_000 + b"0.1]}]}", {}, 413),
    ("an upload over the size limit", "POST", "/recommend_by_upload", FORM,
     _multipart("XX", ("video", "clip.mp4", b"\x00" * int(MAX_UPLOAD_MB * 2**20 * 1.5))), {}, 413),
    ("an unknown video id", "POST", "/recommend_by_video", JSON, b'{"video_id": "no-such-video"}', {}, 404),
    ("an admin call without a token", "POST", "/refresh_catalog", JSON, b'{"reload": true}', {}, 401),
    ("an admin call with a wrong token", "POST", "/refresh_catalog", JSON, b'{"reload": true}',
     {"Authorization": "Bearer wrong"}, 403),
    ("a refresh with nothing to do", "POST", "/refresh_catalog", JSON, b"{}", ADMIN, 400),
    ("a route that does not exist", "POST", "/recommend_by_mood", JSON, b"{}", {}, 404),
    ("GET on a POST route", "GET", "/recommend_by_features", None, b"", {}, 405),
]


def _declared_schema(spec: dict, route: str, status: int) -> dict:
    """The JSON schema /docs.json declares for a route's answer with this status; for a status it does not
    declare, that of BentoML's error responses (InvalidArgument), which every 4xx shares."""
    responses = spec["paths"].get(route, {}).get("post", {}).get("responses", {})
    declared = responses.get(str(status)) or {"content": {JSON: {"schema": {
        "$ref": "#/components/schemas/InvalidArgument"}}}}
    return {**declared["content"][JSON]["schema"], "components": spec["components"]}


def _server_paths(registry: Path, home: Path) -> list[str]:
    return [str(registry), str(registry.parent), str(home), sys.prefix, "site-packages",
            tempfile.gettempdir().rstrip("/") + "/"]


@pytest.mark.parametrize(("what", "method", "route", "content_type", "body", "headers", "status"), HOSTILE,
                         ids=[case[0] for case in HOSTILE])
def test_hostile_requests_get_a_4xx_in_the_declared_error_shape(server, what, method, route, content_type, body,
                                                               headers, status):
    import httpx
    import jsonschema

    from serving.schemas import ErrorBody

    url, registry, home = server
    with httpx.Client(base_url=url, timeout=60) as http:
        spec = http.get("/docs.json").json()
        answer = http.request(method, route, content=body or None,
                              headers={**({"content-type": content_type} if content_type else {}), **headers})
    assert answer.status_code == status, f"{what}: {answer.status_code} {answer.text[:300]}"
    assert answer.headers["content-type"] == JSON, what
    error = ErrorBody.model_validate_json(answer.content).error
    jsonschema.validate(answer.json(), _declared_schema(spec, route, status))
    assert error.strip(), f"{what}: empty message"
    leaked = [p for p in _server_paths(registry, home) if p in answer.text]
    assert not leaked, f"{what}: the answer names server paths {leaked}: {answer.text[:300]}"


def test_the_declared_error_schema_is_the_shape_sent(server):
    """The service's ErrorBody is what /docs.json declares for the 400 and 404 of every route."""
    import httpx
    import jsonschema

    url, _, _ = server
    spec = httpx.get(f"{url}/docs.json", timeout=30).json()
    routes = [r for r, item in spec["paths"].items() if "post" in item and "x-bentoml-name" in item["post"]]
    assert {"/recommend_by_features", "/recommend_by_upload", "/recommend_by_video", "/catalog",
            "/refresh_catalog"} <= set(routes)
    for route in routes:
        for status in (400, 404):
            schema = _declared_schema(spec, route, status)
            jsonschema.validate({"error": "video_id 'x' is not in the feature store"}, schema)
            with pytest.raises(jsonschema.ValidationError):  # the shapes sent before: a list, a list as detail
                jsonschema.validate([{"error": "x"}], schema)
            with pytest.raises(jsonschema.ValidationError):
                jsonschema.validate({"error": "x", "detail": [{"loc": ["k"], "msg": "m"}]}, schema)


@pytest.mark.slow
def test_schemathesis_finds_no_5xx_and_no_answer_off_its_schema(server, tmp_path):
    pytest.importorskip("schemathesis")
    url, _, _ = server
    result = subprocess.run(
        [str(BIN / "st"), "run", f"{url}/docs.json", "--checks",
         "not_a_server_error,response_schema_conformance,content_type_conformance",
         "-H", f"Authorization: Bearer {ADMIN_TOKEN}", "-n", str(FUZZ_EXAMPLES), "--seed", "1",
         "--continue-on-failure", "--workers", "1", "--no-color"],
        capture_output=True, text=True, timeout=3000, cwd=tmp_path)
    out = result.stdout + result.stderr
    generated = re.search(r"(\d+) generated", out)
    print(generated.group(0) if generated else out[-500:])
    assert result.returncode == 0, out[-6000:]
    assert generated and int(generated.group(1)) >= min(1500, FUZZ_EXAMPLES * 5), out[-2000:]
