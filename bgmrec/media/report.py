"""The extraction report: every item that failed (kind, id, path, reason), counts and the extractors used."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPORT_FILE = "extraction_report.json"


@dataclass
class ItemFailure:
    """One media item that could not be turned into features, and why."""

    kind: str
    item_id: str
    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.kind} {self.item_id} ({self.path}): {self.reason}"


@dataclass
class ExtractionReport:
    """What one extraction run did. `ok` is False when any item failed (the CLI exits non-zero)."""

    failures: list[ItemFailure] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    extractors: dict[str, dict[str, Any]] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failures

    def fail(self, kind: str, item_id: str, path: str, reason: str) -> None:
        self.failures.append(ItemFailure(kind, str(item_id), str(path), reason))
        self.count(kind, "failed")

    def count(self, kind: str, what: str, n: int = 1) -> None:
        bucket = self.counts.setdefault(kind, {})
        bucket[what] = bucket.get(what, 0) + n

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "failures": [asdict(f) for f in self.failures],
            "counts": self.counts,
            "extractors": self.extractors,
            "outputs": self.outputs,
            "seconds": self.seconds,
        }

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    def summary_lines(self) -> list[str]:
        lines = [f"{kind}: " + ", ".join(f"{k} {v}" for k, v in sorted(c.items())) for kind, c in self.counts.items()]
        lines += [f"FAILED {f}" for f in self.failures]
        return lines
