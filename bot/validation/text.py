"""The report for people: a summary line, then issues grouped by code, then the repairs made."""

from __future__ import annotations

from bot.validation.model import Issue, Report, Severity

_PER_CODE = 5
_TITLES = {
    Severity.ERROR: "Errors (fix these, then upload again)",
    Severity.WARNING: "Warnings",
    Severity.FIXED: "Repaired",
}


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def summary_line(report: Report, file_name: str | None = None) -> str:
    name = f"{file_name}: " if file_name else ""
    verdict = "valid" if report.valid else "NOT valid"
    counts = []
    for severity, word in ((Severity.ERROR, "error"), (Severity.WARNING, "warning"), (Severity.FIXED, "repair")):
        n = report.count(severity)
        if n:
            counts.append(_plural(n, word))
    shape = f"{_plural(report.rows, 'data row')}, {_plural(len(report.columns), 'column')}"
    detail = f" ({', '.join(counts)})" if counts else ""
    return f"{name}{verdict}: {shape}{detail}"


def format_text(report: Report, file_name: str | None = None) -> str:
    lines = [summary_line(report, file_name)]
    for severity in (Severity.ERROR, Severity.WARNING, Severity.FIXED):
        by_code: dict[str, list[Issue]] = {}
        for issue in report.issues:
            if issue.severity is severity:
                by_code.setdefault(issue.code, []).append(issue)
        if not by_code:
            continue
        lines.append("")
        lines.append(f"{_TITLES[severity]}:")
        for code, issues in by_code.items():
            total = report.issue_counts.get(code, len(issues))
            first_lines = ", ".join(str(i.line) for i in issues[:_PER_CODE] if i.line is not None)
            where = f" - first on line{'s' if ',' in first_lines else ''} {first_lines}" if first_lines else ""
            lines.append(f"  {code} ({total:,}){where}")
            for issue in issues[:_PER_CODE]:
                lines.append(f"    - {issue.message}")
            more = total - min(len(issues), _PER_CODE)
            if more > 0:
                lines.append(f"    ... and {more:,} more")
    if report.truncated:
        lines.append("")
        lines.append(f"(the report keeps the first {len(report.issues):,} issues; the counts above are complete)")
    return "\n".join(lines)
