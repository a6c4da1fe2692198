"""Reads checkov's JSON report of one template and fails unless every finding is fixed or skipped
with a reason.

    python scripts/checkov_summary.py REPORT.json LABEL [--brief]     (scripts/check-deploy.sh)

Prints the counts, every failed check (what, on which resource) and every skipped one with its
reason (--brief: the counts and the failures only). Exits 1 on a failed check, a template checkov could not parse, or a skip whose reason
is missing or longer than one line: a reviewer must be able to read and judge each one.
"""

from __future__ import annotations

import json
import sys
from typing import Any

NO_REASON = {"", "No comment provided"}


def _reports(raw: Any) -> list[dict[str, Any]]:
    # One framework gives an object, several a list of them.
    return raw if isinstance(raw, list) else [raw]


def main(path: str, label: str, *, brief: bool = False) -> int:
    with open(path, encoding="utf-8") as handle:
        reports = _reports(json.load(handle))
    passed, failed, skipped, parse_errors = [], [], [], 0
    for report in reports:
        results = report.get("results", {})
        passed += results.get("passed_checks", [])
        failed += results.get("failed_checks", [])
        skipped += results.get("skipped_checks", [])
        parse_errors += report.get("summary", {}).get("parsing_errors", 0)
    print(f"checkov: {label}: {len(passed)} passed, {len(failed)} failed, {len(skipped)} skipped with a reason")
    problems = []
    for check in failed:
        problems.append(f"FAILED {check['check_id']} {check['check_name']!r} on {check['resource']}")
    for check in skipped:
        reason = (check.get("check_result", {}).get("suppress_comment") or "").strip()
        if not brief:
            print(f"  skipped {check['check_id']} on {check['resource']}: {reason}")
        if reason in NO_REASON or "\n" in reason:
            problems.append(f"SKIPPED {check['check_id']} on {check['resource']} without a one-line reason")
    if parse_errors:
        problems.append(f"{parse_errors} template(s) could not be parsed")
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)
    if problems:
        print(
            "checkov: fix each finding, or skip it with a one-line reason in the resource's "
            "Metadata (checkov: skip: - id, comment) and list it in docs/security.md",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    args = sys.argv[1:]
    brief = "--brief" in args
    args = [a for a in args if a != "--brief"]
    if len(args) != 2:
        sys.exit(__doc__)
    sys.exit(main(args[0], args[1], brief=brief))
