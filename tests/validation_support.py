"""Validate a file through both passes, the fast one and the careful reference, and insist they agree.

The fast pass (bot/validation/fastpath.py) must give the same report as reading every row with
csv.reader: same verdict, rows, columns, issues (code, severity, line, column, message), counts and
output bytes. The validation tests go through `validate_both`, so every one of them is also a
differential test; tests/test_validation_differential.py adds generated and hostile files.
"""

from __future__ import annotations

import dataclasses
import io
from typing import Any

from bot.schema import TableSchema
from bot.validation import Report, ValidationOptions, validate


def comparable(report: Report) -> dict[str, Any]:
    return report.to_dict() | {"severity_counts": report.severity_counts}


def validate_both(data: bytes, schema: TableSchema, options: ValidationOptions | None = None) -> tuple[Report, bytes]:
    """The fast pass's report and output; fails when the careful pass reports anything else."""
    opts = options or ValidationOptions()
    results = []
    for fast in (True, False):
        out = io.BytesIO()
        report = validate(io.BytesIO(data), schema, dataclasses.replace(opts, fast=fast), output=out)
        results.append((report, out.getvalue()))
    (fast_report, fast_out), (careful_report, careful_out) = results
    assert comparable(fast_report) == comparable(careful_report), "the fast and the careful pass disagree"
    assert fast_out == careful_out
    return fast_report, fast_out
