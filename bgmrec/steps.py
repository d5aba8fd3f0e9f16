"""The pipeline steps as plain functions: DVC stages (via `bgmrec` commands) and KFP components both call these.

Each step takes paths and plain parameters, writes its outputs to paths, and returns a small JSON-able dict.
"""

from __future__ import annotations
