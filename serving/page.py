"""The try-it page: a Starlette app the service mounts at /try with BentoML's `@bentoml.asgi_app`.

- GET /try/                  a page where a person uploads a short video, optionally types a description, and
                             gets the ranked music with audio players. The page calls the service's own
                             /recommend_by_upload API with fetch(): the same route, limits and errors as any client.
- GET /try/audio/<music_id>  the MP3 preview of a catalog music.

Previews are read from beside the catalog the service serves (REGISTRY/previews, written by `bgmrec previews`;
in a Bento, the previews folder of the packaged model), not decoded from the dataset's music files on demand: the
service never sees the dataset (a replica has the registry volume, a Bento its model folder), and a preview is
then one file read. Music without a preview (e.g. added by a batch since) gets a 404 naming it.

The routes reach the running service with `bentoml.get_current_service()`, so they follow its registry swaps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bentoml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from bgmrec.previews import PREVIEW_MEDIA_TYPE, preview_file, previews_dir

PREVIEW_CACHE_SECONDS = 3600


def service_previews_dir(service: Any) -> Path:
    """Where the previews of the catalog the service serves are: beside the packaged model in a pinned Bento,
    else in the registry it follows."""
    if service.settings.model_source == "bento" and service.bento_model is not None:
        return previews_dir(service.bento_model.path)
    return previews_dir(service.registry.root)


def _not_found(message: str) -> JSONResponse:
    # the service's one error shape (serving/guard.py)
    return JSONResponse({"error": message}, status_code=404)


async def try_page(request: Request) -> Response:
    return HTMLResponse(PAGE)


async def audio_preview(request: Request) -> Response:
    """The MP3 preview of one catalog music, or a 404 naming the music and what is missing."""
    service = bentoml.get_current_service()
    music_id = request.path_params["music_id"]
    if service.catalog.indices_of([music_id])[0] < 0:
        return _not_found(f"music {music_id!r} is not in the catalog")
    path = preview_file(service_previews_dir(service), music_id)
    if not path.is_file():
        return _not_found(f"music {music_id!r} has no audio preview on this server: write the catalog's previews "
                          "beside it with `bgmrec previews --dataset DIR --registry DIR`")
    return FileResponse(path, media_type=PREVIEW_MEDIA_TYPE,
                        headers={"Cache-Control": f"public, max-age={PREVIEW_CACHE_SECONDS}"})


page_app = Starlette(routes=[Route("/", try_page), Route("/audio/{music_id:path}", audio_preview)])

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>bgmrec: background music for your video</title>
<link rel="icon" href="data:,">
<style>
body { font-family: system-ui, sans-serif; max-width: 46rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
label { display: block; margin: .8rem 0 .2rem; font-weight: 600; }
textarea { width: 100%; min-height: 3.5rem; } input[type=number] { width: 5rem; }
button { margin-top: 1rem; padding: .4rem 1.2rem; font-size: 1rem; }
#status { margin: 1rem 0; color: #555; } #status.error { color: #b00020; }
#results { list-style: none; padding: 0; } #results li { margin: .5rem 0; } .rank { width: 2rem; text-align: right; }
.music { display: flex; gap: .8rem; align-items: center; flex-wrap: wrap; }
.title { min-width: 12rem; font-weight: 600; } .id, .score { color: #666; font-variant-numeric: tabular-nums; }
audio { height: 30px; } video { display: block; max-width: 100%; max-height: 14rem; margin-top: .5rem; }
</style>
</head>
<body>
<h1>Background music for your video</h1>
<p>Upload a short video, add its description if you like (any language), and get the catalog's music ranked for
it. Each music has a preview to listen to.</p>
<form id="try">
  <label for="video">Video</label>
  <input id="video" name="video" type="file" accept="video/*" required>
  <video id="preview" controls muted hidden></video>
  <label for="description">Description (optional)</label>
  <textarea id="description" name="description" maxlength="5000"></textarea>
  <label for="k">How many music</label>
  <input id="k" name="k" type="number" min="1" max="100" value="10" required>
  <div><button id="submit" type="submit">Recommend music</button></div>
</form>
<p id="status" role="status"></p>
<ol id="results"></ol>
<script>
"use strict";
const form = document.getElementById("try");
const statusLine = document.getElementById("status");
const results = document.getElementById("results");
const button = document.getElementById("submit");
const videoPreview = document.getElementById("preview");
// The page is served at <root>/try/: the API and the previews are found relative to it, behind any prefix.
const here = location.pathname.endsWith("/") ? location.pathname : location.pathname + "/";
const apiUrl = new URL("../recommend_by_upload", location.origin + here);

function say(text, isError) {
  statusLine.textContent = text;
  statusLine.className = isError ? "error" : "";
}

document.getElementById("video").addEventListener("change", (event) => {
  const file = event.target.files[0];
  if (videoPreview.src) URL.revokeObjectURL(videoPreview.src);
  videoPreview.hidden = !file;
  if (file) videoPreview.src = URL.createObjectURL(file);
});

function musicItem(item, rank) {
  const li = document.createElement("li");
  li.className = "music";
  const position = document.createElement("span");
  position.className = "rank";
  position.textContent = rank + ".";
  const title = document.createElement("span");
  title.className = "title";
  title.textContent = item.title;
  const id = document.createElement("span");
  id.className = "id";
  id.textContent = item.music_id;
  const score = document.createElement("span");
  score.className = "score";
  score.textContent = "score " + item.score.toFixed(3);
  const audio = document.createElement("audio");
  audio.controls = true;
  audio.preload = "none";
  audio.title = item.title;
  audio.src = new URL("audio/" + encodeURIComponent(item.music_id), location.origin + here).href;
  li.append(position, title, id, score, audio);
  li.dataset.rank = String(rank);
  return li;
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const data = new FormData(form);
  if (!String(data.get("description") || "").trim()) data.delete("description");
  results.replaceChildren();
  button.disabled = true;
  say("Watching the video and ranking the catalog…", false);
  try {
    const response = await fetch(apiUrl, { method: "POST", body: data });
    const body = await response.json().catch(() => null);
    if (!response.ok) {
      const error = Array.isArray(body) ? body[0] : body;
      say((response.status >= 500 ? "The recommender failed (" : "The recommender refused the video (")
          + response.status + "): "
          + ((error && (error.error || error.detail)) || response.statusText), true);
      return;
    }
    results.append(...body.items.map((item, i) => musicItem(item, i + 1)));
    say(body.items.length + " music from catalog version " + body.catalog_version + " (model "
        + body.model_version + ")", false);
  } catch (error) {
    say("The recommender did not answer: " + error.message, true);
  } finally {
    button.disabled = false;
  }
});
</script>
</body>
</html>
"""
