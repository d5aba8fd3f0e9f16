"""What a validation run reports: failures naming the offending rows, summary.txt, result.json."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

REPORTED_IDS = 20  # ids per failure in summary.txt (result.json keeps up to STORED_IDS)


STORED_IDS = 1000


DESCRIBED_ROWS = 5  # bad vectors described (length, norm) in a failure's detail


SUMMARY_FILE = "summary.txt"


RESULT_FILE = "result.json"


DOCS_DIR = "data_docs"


@dataclass
class Failure:
    """One failed expectation: which table and column, what was expected, and the offending row ids."""

    table: str
    expectation: str
    column: str | None
    detail: str
    unexpected_count: int
    offending_ids: list[str] = field(default_factory=list)

    def line(self) -> str:
        where = f"{self.table}" + (f" column '{self.column}'" if self.column else "")
        text = f"{where}: {self.expectation} failed ({self.detail})"
        if self.offending_ids:
            shown = ", ".join(self.offending_ids[:REPORTED_IDS])
            more = len(self.offending_ids) - REPORTED_IDS
            text += f"; offending rows: {shown}" + (f" and {more} more" if more > 0 else "")
        return text


@dataclass
class ValidationReport:
    """The outcome of one suite over a dataset's tables, with where its readable report was written."""

    suite: str
    dataset: str
    success: bool
    tables: dict[str, int]
    failures: list[Failure]
    report_dir: str
    data_docs: str | None = None

    def summary(self) -> str:
        status = "PASSED" if self.success else f"FAILED ({len(self.failures)} expectation(s))"
        lines = [f"{self.suite} validation of {self.dataset}: {status}"]
        lines += [f"  {name}: {rows} rows" for name, rows in self.tables.items()]
        lines += [f"  - {failure.line()}" for failure in self.failures]
        if self.data_docs:
            lines.append(f"  Data Docs: {self.data_docs}")
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ValidationFailed(ValueError):
    """Validation found bad data. The message is the text summary; `report` has the details."""

    def __init__(self, report: ValidationReport):
        self.report = report
        super().__init__(report.summary())


def raise_on_failure(report: ValidationReport, log: Callable[[str], None] | None = None) -> ValidationReport:
    """Print the summary and raise ValidationFailed when the report has failures (stops the pipeline)."""
    if log is not None:
        log(report.summary())
    if not report.success:
        raise ValidationFailed(report)
    return report
