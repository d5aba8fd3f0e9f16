"""Pipeline runs killed with SIGKILL at each step converge when run again, and runs started together all keep
their music: nothing lost, nothing twice.

`bgmrec trigger` (the new-music-batch pipeline through kfp.local) is killed, its whole process group, once at each
step: every run starts over from what the previous killed run left, and a last run goes to the end. The catalog,
the Feast offline and online rows, the ledger and the registry are then those of an uninterrupted run.
`dvc repro` is killed (dvc alone: it cannot pass SIGKILL on, bgmrec.lifecycle ends its stage commands) during
training, the gate and the catalog build, then run again to the end: no stage command outlives it, the registry
holds one version and the catalog every music.

The step boundaries are found from outside, as an operator's crash would meet them: the kfp.local task processes
(`--function_to_execute <component>`), the files each step writes, and the stage commands DVC starts.

Two triggers of different batches started at once (a barrier) both reach the catalog, the ledger and Feast, and
below them two processes pushing batches to one Feast repo at once both keep their offline rows (Feast appends by
rewriting the table; bgmrec.feature_store.push_music serialises the pushes). More trials than the suite's:
BGMREC_TRIGGER_PAIRS=10 (full triggers) and BGMREC_PUSH_PAIRS=100.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import pytest
import yaml

pytestmark = [pytest.mark.reliability, pytest.mark.integration,
              pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc (Linux)")]

PROJECT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
POLL_SECONDS = 0.01
RUN_TIMEOUT_SECONDS = 600

KillPoint = Callable[[int], bool]
TRIGGER_STEPS = 5  # validate, extract, push to Feast, embed, refresh the catalog
TRIGGER_PAIRS = int(os.environ.get("BGMREC_TRIGGER_PAIRS", "1"))
PUSH_PAIRS = int(os.environ.get("BGMREC_PUSH_PAIRS", "20"))


# -- processes ---------------------------------------------------------------------------------------------


def _group(pgid: int) -> list[psutil.Process]:
    """Live (not zombie) processes of a process group."""
    found = []
    for process in psutil.process_iter(["status"]):
        try:
            if os.getpgid(process.pid) == pgid and process.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (ProcessLookupError, psutil.Error):
            pass
    return found


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    """Those of `processes` still running (psutil checks the start time, so a reused pid is not them)."""
    alive = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.Error:
            pass
    return alive


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


@dataclass
class Run:
    """One command run until it ends or its kill point is reached."""

    returncode: int | None  # None: killed
    output: str
    killed_at: str | None


def _run(args: list[str], cwd: Path, log: Path, kill_point: KillPoint | None = None, *,
         whole_group: bool = True, env: dict[str, str] | None = None) -> Run:
    """Run `args` as the leader of its own process group; when `kill_point(pid)` turns true, SIGKILL the whole
    group (`whole_group`) or the command's process alone, and wait until the group is gone."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1",
           "GX_ANALYTICS_ENABLED": "false", **(env or {})}
    with log.open("w") as out:
        process = subprocess.Popen(args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
    try:
        while process.poll() is None:
            if kill_point is not None and kill_point(process.pid):
                started = _descendants(process.pid)  # whatever group they are in
                if whole_group:
                    os.killpg(process.pid, signal.SIGKILL)
                else:
                    os.kill(process.pid, signal.SIGKILL)
                process.wait()
                gone_by = time.monotonic() + 15
                while (survivors := _alive(started) + _group(process.pid)) and time.monotonic() < gone_by:
                    time.sleep(0.1)
                names = [" ".join(_cmdline(p))[:200] for p in survivors]
                assert not names, f"{args[:2]}: processes outlived the kill: {names}"
                return Run(None, log.read_text(errors="replace"), kill_point.__doc__)
            assert time.monotonic() < deadline, f"{args[:3]} did not end in {RUN_TIMEOUT_SECONDS} s"
            time.sleep(POLL_SECONDS)
    finally:
        if process.poll() is None or _group(process.pid):
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return Run(process.returncode, log.read_text(errors="replace"), None)


# -- kill points of the new-music-batch pipeline -----------------------------------------------------------


def _task(function: str) -> Callable[[int], list[psutil.Process]]:
    """The kfp.local task processes running one component function under a trigger."""
    def processes(root: int) -> list[psutil.Process]:
        return [p for p in _descendants(root) if "--function_to_execute" in (cmd := _cmdline(p))
                and cmd[cmd.index("--function_to_execute") + 1:][:1] == [function]]
    return processes


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def trigger_kill_points(pipeline_root: Path, registry: Path, feature_repo: Path) -> list[KillPoint]:
    """One kill point per step, in pipeline order; each is checked against a fresh pipeline root."""
    from bgmrec.data.contract import MUSIC_FEATURES_FILE
    from bgmrec.feature_store import DATA_DIR
    from bgmrec.ledger import BATCHES_DIR

    offline = feature_repo / DATA_DIR / MUSIC_FEATURES_FILE

    def ingest(root: int) -> bool:
        """validate batch: its task running for a second"""
        return any(time.time() - p.create_time() > 1.0 for p in _task("ingest_music_batch")(root))

    def extract(root: int) -> bool:
        """extract music features: its features written"""
        return any(pipeline_root.glob("*/extract-music-batch/features/music_features.parquet"))

    offline_before = _stamp(offline)

    def push(root: int) -> bool:
        """push to Feast: the offline table rewritten (the online store before it)"""
        return bool(_task("push_music_batch")(root)) and _stamp(offline) != offline_before

    def embed(root: int) -> bool:
        """embed with the production encoder: its embeddings written"""
        return any(pipeline_root.glob("*/embed-music-batch/embeddings/embeddings.parquet"))

    def recorded() -> set[str]:
        ledger = registry / BATCHES_DIR
        return {p.name for p in ledger.iterdir() if not p.name.startswith(".")} if ledger.is_dir() else set()

    recorded_before = recorded()

    def refresh(root: int) -> bool:
        """refresh the catalog: the ledger has recorded the batch"""
        return recorded() != recorded_before

    points = [ingest, extract, push, embed, refresh]
    assert len(points) == TRIGGER_STEPS
    return points


# -- what a batch run leaves --------------------------------------------------------------------------------


@dataclass
class BatchState:
    catalog_ids: list[str]
    batch_embeddings: np.ndarray
    offline_rows: Counter
    online_unknown: list[str]
    ledger_ids: list[str]
    versions: list[str]
    production: str


def batch_state(registry: Path, feature_repo: Path, batch_ids: list[str]) -> BatchState:
    import pyarrow.parquet as pq

    from bgmrec.catalog import CATALOG_FILE, load_catalog
    from bgmrec.data.contract import MUSIC_FEATURES_FILE
    from bgmrec.feature_store import DATA_DIR, online_music_vectors, open_store
    from bgmrec.ledger import recorded_batches
    from bgmrec.registry import ModelRegistry

    catalog = load_catalog(registry / CATALOG_FILE)
    rows = catalog.indices_of(batch_ids)
    offline = pq.read_table(feature_repo / DATA_DIR / MUSIC_FEATURES_FILE, columns=["music_id"])
    _, unknown = online_music_vectors(open_store(feature_repo), batch_ids)
    models = ModelRegistry(registry)
    return BatchState(
        catalog_ids=[str(i) for i in catalog.ids],
        batch_embeddings=np.where((rows >= 0)[:, None], catalog.embeddings[np.maximum(rows, 0)], np.nan),
        offline_rows=Counter(map(str, offline.column("music_id").to_pylist())),
        online_unknown=unknown,
        ledger_ids=[str(i) for vectors, _ in recorded_batches(registry) for i in vectors.ids],
        versions=models.versions(),
        production=models.production()["version"],
    )


def assert_nothing_twice(state: BatchState, when: str) -> None:
    for name, ids in (("catalog", state.catalog_ids), ("ledger", state.ledger_ids)):
        twice = sorted(i for i, n in Counter(ids).items() if n > 1)
        assert not twice, f"{when}: music twice in the {name}: {twice}"
    twice = sorted(i for i, n in state.offline_rows.items() if n > 1)
    assert not twice, f"{when}: music twice in the Feast offline table: {twice}"


def assert_same(state: BatchState, reference: BatchState, when: str) -> None:
    assert_nothing_twice(state, when)
    assert sorted(state.catalog_ids) == sorted(reference.catalog_ids), when
    np.testing.assert_allclose(state.batch_embeddings, reference.batch_embeddings, atol=1e-5, err_msg=when)
    assert state.offline_rows == reference.offline_rows, when
    assert state.online_unknown == reference.online_unknown == [], when
    assert sorted(state.ledger_ids) == sorted(reference.ledger_ids), when
    assert (state.versions, state.production) == (reference.versions, reference.production), when


@dataclass
class World:
    """A private copy of the music world's registry and Feast repo, and the trigger command on them."""

    root: Path
    registry: Path
    feature_repo: Path
    dataset: Path
    batch: Path

    def trigger(self, pipeline_root: Path, batch: Path | None = None) -> list[str]:
        return [str(BIN / "bgmrec"), "trigger", "--music-batch", str(batch or self.batch), "--dataset",
                str(self.dataset),
                "--registry", str(self.registry), "--feature-repo", str(self.feature_repo),
                "--pipeline-root", str(pipeline_root), "--params", str(PROJECT / "params.yaml")]


def copy_world(music_world, world_feature_repo, batch: Path, root: Path) -> World:
    """Copies of the registry and the Feast repo. The copied repo is applied again: Feast's registry holds the
    absolute paths of the offline tables it was applied with, so a copy would otherwise write the original's."""
    from bgmrec.feature_store import apply_repo, close_store, open_store

    root.mkdir(parents=True)
    registry = Path(shutil.copytree(music_world.registry_dir, root / "registry"))
    repo = Path(shutil.copytree(world_feature_repo, root / "feast"))
    apply_repo(open_store(repo), repo)
    close_store(repo)  # no store of this repo kept open here, where processes are forked
    return World(root, registry, repo, music_world.dataset_dir, batch)


def batch_music_ids(batch: Path) -> list[str]:
    import pandas as pd

    return [str(i) for i in pd.read_csv(batch / "manifest.csv")["music_id"]]


@pytest.fixture(scope="module")
def uninterrupted(music_world, world_feature_repo, new_music_batch, tmp_path_factory) -> BatchState:
    """What one uninterrupted trigger of the batch leaves."""
    world = copy_world(music_world, world_feature_repo, new_music_batch, tmp_path_factory.mktemp("reference") / "w")
    run = _run(world.trigger(world.root / "kfp"), world.root, world.root / "trigger.log")
    assert run.returncode == 0, run.output[-3000:]
    return batch_state(world.registry, world.feature_repo, batch_music_ids(new_music_batch))


@pytest.mark.slow
def test_a_trigger_killed_at_each_step_converges_to_the_uninterrupted_run(
        music_world, world_feature_repo, new_music_batch, uninterrupted, tmp_path):
    world = copy_world(music_world, world_feature_repo, new_music_batch, tmp_path / "w")
    ids = batch_music_ids(new_music_batch)
    killed = []
    for attempt in range(TRIGGER_STEPS):
        pipeline_root = tmp_path / f"kfp-{attempt}"
        kill_point = trigger_kill_points(pipeline_root, world.registry, world.feature_repo)[attempt]
        run = _run(world.trigger(pipeline_root), world.root, tmp_path / f"trigger-{attempt}.log", kill_point)
        if run.killed_at is None:  # the run ended before the step: what it left is checked by the last run
            killed.append(f"(not reached: {kill_point.__doc__}; exit {run.returncode})")
            continue
        killed.append(run.killed_at)
        assert_nothing_twice(batch_state(world.registry, world.feature_repo, ids), f"killed at {run.killed_at}")
    last = _run(world.trigger(tmp_path / "kfp-last"), world.root, tmp_path / "trigger-last.log")
    # A batch whose music is all in the catalog already (killed after the catalog was written) is refused as such.
    already = last.returncode == 1 and all(f"'{i}' is already in the catalog" in last.output for i in ids)
    assert last.returncode == 0 or already, last.output[-3000:]
    assert_same(batch_state(world.registry, world.feature_repo, ids), uninterrupted, f"after kills at {killed}")
    print(f"killed at: {killed}; last run: {'refused, already in the catalog' if already else 'accepted'}")


# -- dvc repro -----------------------------------------------------------------------------------------------

DVC_STAGES = ("validate_features", "split", "feast", "train", "evaluate", "gate", "build_catalog")


@pytest.fixture
def dvc_project(tmp_path, tiny_dataset) -> Path:
    """A git + DVC project with the project's stages from feature validation to the catalog build, for the gate's
    model only, on the tiny dataset; every training run short (train.overrides: a few seconds' budget)."""
    project = tmp_path / "project"
    project.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    model = params["gate"]["model"]
    params["data"] = {**params["data"], "dataset": "data/ds"}
    params["gate"] = {**params["gate"], "registry": "data/registry", "thresholds": {"weak.recall@1": 0.0}}
    params["train"]["overrides"] = {**params["train"]["overrides"], "epochs": 1000, "patience": 1000,
                                    "max_seconds": 4.0}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    stages = {name: yaml.safe_load((PROJECT / "dvc.yaml").read_text())["stages"][name] for name in DVC_STAGES}
    for stage in stages.values():  # the matrix / foreach over models: the gate's model only
        if "model" in stage.get("matrix", {}):
            stage["matrix"]["model"] = [model]
        if isinstance(stage.get("foreach"), list) and model in stage["foreach"]:
            stage["foreach"] = [model]
    (project / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    shutil.copytree(PROJECT / "bgmrec", project / "bgmrec", ignore=shutil.ignore_patterns("__pycache__"))
    (project / "features").mkdir()
    for name in ("definitions.py", "feature_store.yaml"):
        shutil.copy(PROJECT / "features" / name, project / "features" / name)
    shutil.copytree(tiny_dataset, project / "data" / "ds", ignore=shutil.ignore_patterns("splits", "oracle.npz"))
    (project / ".dvc").mkdir()
    (project / ".dvc" / "config").write_text(
        f"[core]\n    analytics = false\n    site_cache_dir = {tmp_path / 'dvc-site-cache'}\n")
    # DVCLive, which the training runs log through, needs a commit to refer to
    git = ["git", "-c", "user.name=bgmrec tests", "-c", "user.email=tests@bgmrec.invalid"]
    subprocess.run([*git, "add", "-A"], cwd=project, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "project"], cwd=project, check=True)
    return project


def _stage_command(root: int, command: str) -> list[psutil.Process]:
    """The `bgmrec <command>` processes DVC started."""
    return [p for p in _descendants(root) if (cmd := _cmdline(p))[1:2] and Path(cmd[1]).name == "bgmrec"
            and cmd[2:3] == [command]]


def dvc_kill_points(project: Path) -> list[KillPoint]:
    registry = project / "data" / "registry"

    def training(root: int) -> bool:
        """train: after its first epoch"""
        return bool(_stage_command(root, "train")) and any(project.glob("runs/*/*/dvclive/*"))

    def gate(root: int) -> bool:
        """gate: as soon as the candidate's version folder exists"""
        return bool(_stage_command(root, "gate")) and (registry / "versions").is_dir() and any(
            (registry / "versions").iterdir())

    def catalog(root: int) -> bool:
        """build-catalog: a second into the command"""
        return any(time.time() - p.create_time() > 1.0 for p in _stage_command(root, "build-catalog"))

    return [training, gate, catalog]


@pytest.mark.slow
def test_dvc_repro_killed_in_training_gate_and_catalog_converges(dvc_project, tiny_dataset):
    from bgmrec.catalog import CATALOG_FILE, load_catalog
    from bgmrec.data.contract import load_dataset
    from bgmrec.registry import ModelRegistry

    dvc = [str(BIN / "dvc"), "repro"]
    killed = []
    for attempt, kill_point in enumerate(dvc_kill_points(dvc_project)):
        run = _run(dvc, dvc_project, dvc_project.parent / f"dvc-{attempt}.log", kill_point, whole_group=False)
        assert run.killed_at is not None, f"{kill_point.__doc__} not reached: {run.output[-3000:]}"
        killed.append(run.killed_at)
    last = _run(dvc, dvc_project, dvc_project.parent / "dvc-last.log")
    assert last.returncode == 0, f"after kills at {killed}: {last.output[-3000:]}"
    registry = ModelRegistry(dvc_project / "data" / "registry")
    assert len(registry.versions()) == 1, f"after kills at {killed}: versions {registry.versions()}"
    assert registry.production()["version"] == registry.versions()[0]
    catalog = load_catalog(registry.root / CATALOG_FILE)
    music = sorted(map(str, load_dataset(tiny_dataset).music["music_id"]))
    assert sorted(map(str, catalog.ids)) == music and catalog.model_version == registry.versions()[0]
    print(f"killed at: {killed}")


# -- runs at the same time -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def other_music_batch(tmp_path_factory, tone_writer) -> Path:
    """A second clean batch of two tones, other ids than `new_music_batch`'s."""
    batch = tmp_path_factory.mktemp("other-batch")
    tone_writer(batch / "late-a.wav", 350.0)
    tone_writer(batch / "late-b.wav", 700.0)
    (batch / "manifest.csv").write_text("music_id,title\nlate-a,Late A\nlate-b,Late B\n")
    return batch


def _triggers_together(world: World, batches: list[Path]) -> list[Run]:
    """One trigger per batch, all released at once by a barrier; their runs."""
    import threading

    barrier, runs = threading.Barrier(len(batches)), [None] * len(batches)

    def trigger(i: int) -> None:
        args = world.trigger(world.root / f"kfp-{i}", batches[i])
        barrier.wait()
        runs[i] = _run(args, world.root, world.root / f"trigger-{i}.log")

    threads = [threading.Thread(target=trigger, args=(i,)) for i in range(len(batches))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return runs


@pytest.mark.slow
def test_two_triggers_started_together_lose_no_music(music_world, world_feature_repo, new_music_batch,
                                                     other_music_batch, tmp_path):
    batches = [new_music_batch, other_music_batch]
    ids = [batch_music_ids(b) for b in batches]
    expected = {*music_world.music_ids, *ids[0], *ids[1]}
    for trial in range(TRIGGER_PAIRS):
        world = copy_world(music_world, world_feature_repo, new_music_batch, tmp_path / f"w{trial}")
        for run in _triggers_together(world, batches):
            assert run is not None and run.returncode == 0, f"trial {trial}: {run.output[-3000:] if run else run}"
        state = batch_state(world.registry, world.feature_repo, [*ids[0], *ids[1]])
        assert_nothing_twice(state, f"trial {trial}")
        assert set(state.catalog_ids) == expected, f"trial {trial}: catalog lost {expected - set(state.catalog_ids)}"
        assert set(state.offline_rows) == expected, (f"trial {trial}: Feast offline lost "
                                                     f"{expected - set(state.offline_rows)}")
        assert state.online_unknown == [], f"trial {trial}: not online: {state.online_unknown}"
        assert sorted(state.ledger_ids) == sorted([*ids[0], *ids[1]]), f"trial {trial}: ledger {state.ledger_ids}"


def _pusher(barrier, repo: str, name: str, trials: int, dims: tuple[int, int]) -> None:
    """One process pushing a batch of three music per trial, each released by the barrier with the other's."""
    from bgmrec.data.contract import MusicVectors
    from bgmrec.feature_store import open_store, push_music

    store = open_store(repo)
    rng = np.random.default_rng(len(name))
    for trial in range(trials):
        ids = [f"t{trial}-{name}-{i}" for i in range(3)]
        vectors = MusicVectors(np.asarray(ids, dtype=object), rng.standard_normal((3, dims[0]), np.float32),
                               rng.standard_normal((3, dims[1]), np.float32))
        barrier.wait(60)
        push_music(store, vectors)


@pytest.mark.slow
def test_batches_pushed_to_feast_at_once_keep_their_offline_rows(music_world, world_feature_repo, tmp_path):
    import multiprocessing

    import pyarrow.parquet as pq

    from bgmrec.data.contract import MUSIC_FEATURES_FILE, load_dataset
    from bgmrec.feature_store import DATA_DIR

    world = copy_world(music_world, world_feature_repo, tmp_path, tmp_path / "w")
    dims = load_dataset(music_world.dataset_dir).music_vectors.dims
    # spawned, not forked: this process runs Feast's and DuckDB's threads, whose locks a fork can inherit held
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    workers = [context.Process(target=_pusher, args=(barrier, str(world.feature_repo), name, PUSH_PAIRS,
                                                     (dims["audio_embedding"], dims["audio_lld"])))
               for name in ("first", "second")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60 + 10 * PUSH_PAIRS)
        if worker.exitcode is None:
            worker.kill()
            worker.join()
    assert [w.exitcode for w in workers] == [0, 0], "a pushing process failed (its traceback is in the output)"
    table = pq.read_table(world.feature_repo / DATA_DIR / MUSIC_FEATURES_FILE, columns=["music_id"])
    kept = Counter(map(str, table.column("music_id").to_pylist()))
    lost = [sum(kept[f"t{trial}-{name}-{i}"] != 1 for name in ("first", "second") for i in range(3))
            for trial in range(PUSH_PAIRS)]
    assert sum(lost) == 0, f"offline rows lost or doubled per trial: {lost}"
