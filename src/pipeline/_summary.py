"""The report as text: the verification report, the stage table, where the time went.

:class:`~pipeline.PipelineReport`'s ``summary()``, ``table()`` and
``times()`` are these functions. Every figure printed is one the run
counted; no count printed is negative.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ._verdict import capacity

if TYPE_CHECKING:
    from ._report import PipelineReport

__all__ = ["stage_table", "summary", "time_table"]


def summary(report: PipelineReport) -> str:
    """The verification report, the stage table, and where the time went."""
    lines = ["=== VERIFICATION REPORT ==="]
    if report.expected is None:
        lines.append("Expected: unknown (the source has no len())")
    else:
        lines.append(f"Expected: {report.expected}")
    if report.expected is None or report.items_read != report.expected:
        lines.append(f"Read: {report.items_read}")
    if report.expected is not None and report.items_read < report.expected:
        lines.append(f"Not read: {report.expected - report.items_read}")
    lines += _flow_lines(report)
    lines.append(f"Status: {report.status} in {report.elapsed_seconds:.3f}s")
    if report.error is not None:
        lines.append(f"Error: {report.error}")
    for thread in report.left_running:
        lines.append(f"Still running: {thread}")
    if report.stages:
        lines += ["", stage_table(report), "", time_table(report)]
    return "\n".join(lines)


def stage_table(report: PipelineReport) -> str:
    """The per-stage counts, under a ``=== STAGES ===`` title."""
    header = ("stage", "workers", "received", "emitted", "dropped", "failed", "retried",
              "unfinished", "busy s")  # fmt: skip
    rows = [
        (
            s.name,
            str(s.workers),
            str(s.received),
            str(s.emitted),
            str(s.dropped),
            str(s.failed),
            str(s.retried),
            str(s.not_processed),
            f"{s.busy_seconds:.3f}",
        )
        for s in report.stages
    ]
    return _table("=== STAGES ===", header, rows)


def time_table(report: PipelineReport) -> str:
    """Where each stage's time went, under a ``=== TIME ===`` title, then the verdict."""
    elapsed = report.elapsed_seconds
    header = ("stage", "executor", "workers", "busy", "starved", "blocked", "items/s",
              "item p50", "item p99")  # fmt: skip
    rows = []
    for s in report.stages:
        had = capacity(s, elapsed)
        rows.append(
            (
                s.name,
                s.executor,
                str(s.workers),
                _percent(s.busy_seconds + s.dispatch_seconds, had),  # as the verdict reads it
                _percent(s.starved_seconds, had),
                _percent(s.blocked_seconds, had),
                f"{s.completed / elapsed:.0f}" if elapsed > 0 else "-",
                _duration(s.item_seconds.p50 if s.item_seconds else None),
                _duration(s.item_seconds.p99 if s.item_seconds else None),
            )
        )
    verdict = report.verdict
    mode = "GIL enabled" if report.gil_enabled else "GIL disabled"
    lines = [_table(f"=== TIME ({mode}) ===", header, rows)]
    if verdict is None:
        lines.append("Verdict: the run was too short to tell")
    else:
        lines.append(f"Verdict: {verdict}")
    return "\n".join(lines)


def _duration(seconds: float | None) -> str:
    # A time per item, in the unit that keeps it short.
    if seconds is None:
        return "-"
    if seconds >= 1:
        return f"{seconds:.2f}s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f}ms"
    return f"{seconds * 1e6:.1f}us"


def _percent(seconds: float, capacity: float) -> str:
    # Never above 100%: waits and busy time are measured a little apart
    # from the wall clock, so rounding could otherwise show 101%.
    return f"{min(seconds / capacity, 1.0):.0%}" if capacity > 0 else "-"


def _table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    # Left-aligned first column, right-aligned numbers, two spaces apart.
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]

    def fmt(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest]).rstrip()

    return "\n".join([title, fmt(header), *(fmt(row) for row in rows)])


def _flow_lines(report: PipelineReport) -> list[str]:
    # What became of the items, in the units they had at each point: the
    # source's items up to the first stage that turns n items into m != n,
    # then that stage's items, and so on. Every count is a sum of counted
    # figures; none is negative.
    lines: list[str] = []
    filtered = failed = unfinished = 0
    first = True
    for stage in report.stages:
        filtered += stage.dropped
        failed += stage.failed
        unfinished += stage.not_processed
        if stage.created == 0:
            continue
        went_in = stage.completed - stage.dropped
        lines += _outcome_lines(first, went_in, filtered, failed, unfinished)
        verb = "merged" if stage.created < 0 else "split"
        lines.append(f"Stage {stage.name!r} {verb} {went_in} items into {stage.emitted}")
        filtered = failed = unfinished = 0
        first = False
    unfinished += report.undelivered
    lines += _outcome_lines(first, report.outputs, filtered, failed, unfinished)
    if not first:
        lines.append(f"Delivered: {report.outputs}")
    return lines


def _outcome_lines(
    first: bool, success: int, filtered: int, failed: int, unfinished: int
) -> list[str]:
    if first:  # the verification report's own four lines, in the source's items
        lines = [
            f"Processed: {success + filtered + failed}",
            f"Success: {success}",
            f"Failed: {failed}",
        ]
        if filtered:
            lines.append(f"Filtered out: {filtered}")
        if unfinished:
            lines.append(f"Not processed: {unfinished}")
        return lines
    parts = [f"{label} {count}" for label, count in
             (("filtered out", filtered), ("failed", failed), ("not processed", unfinished))
             if count]  # fmt: skip
    return [f"  of those: {', '.join(parts)}"] if parts else []
