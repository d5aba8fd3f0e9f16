"""A command started by `dvc repro` dies with it.

DVC runs a stage's command as its child (through a shell). When `dvc repro` is killed with SIGKILL it cannot pass
the signal on, and the stage's `bgmrec` process would go on writing into the stage's outputs while a re-run
trains the same stage. Under DVC (it sets DVC_STAGE for every stage command) `bgmrec` therefore watches the
first ancestor that is not a shell — `dvc` — and when it is gone, ends its own process group: itself and every
child it started (kfp.local tasks, extraction workers).
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

SHELLS = {"sh", "bash", "dash", "zsh", "ksh", "fish"}
POLL_SECONDS = 0.5


def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, start time) of a process from /proc, None when it does not exist."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # the command name may hold spaces and parentheses
    return int(fields[1]), fields[19]


def _is_shell(pid: int) -> bool:
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return False
    return Path(argv0).name in SHELLS


def watched_ancestor(pid: int | None = None) -> tuple[int, str] | None:
    """The first ancestor of `pid` (default: this process) that is not a shell, with its start time."""
    stat = _stat(pid or os.getpid())
    while stat is not None and stat[0] > 1:
        parent = stat[0]
        parent_stat = _stat(parent)
        if parent_stat is None:
            return None
        if not _is_shell(parent):
            return parent, parent_stat[1]
        stat = parent_stat
    return None


def die_with_dvc(environ: dict[str, str] | None = None) -> bool:
    """Under `dvc repro`, end this process group when DVC is gone; returns whether the watch started."""
    environ = os.environ if environ is None else environ
    if "DVC_STAGE" not in environ or not Path("/proc").is_dir():
        return False
    watched = watched_ancestor()
    if watched is None:
        return False
    pid, started = watched

    def watch() -> None:
        while True:
            stat = _stat(pid)
            if stat is None or stat[1] != started:  # gone, or the pid reused by another process
                os.killpg(os.getpgid(0), signal.SIGKILL)
            threading.Event().wait(POLL_SECONDS)

    threading.Thread(target=watch, name="bgmrec-dies-with-dvc", daemon=True).start()
    return True
