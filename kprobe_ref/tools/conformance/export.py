"""``kprobe-ref vectors export``: write the checked vectors of one ISA as JSON Lines.

The output is ``<out>/<isa>.jsonl`` (kprobe vectors, then kretprobe vectors), one record per
line in a fixed order, so two exports are byte-identical.  Every record was checked on the
machine before it is written; a disagreement stops the export (exit status 1 from the CLI).
:func:`coverage` tells which decode-table rows and reason codes the records cover and which
they miss.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kprobe_ref.tools.conformance.cases import candidates
from kprobe_ref.tools.conformance.check import Checker, vectors_for
from kprobe_ref.tools.conformance.kret import kretprobe_vectors
from kprobe_ref.tools.conformance.schema import to_line

__all__ = ["Coverage", "coverage", "export", "generate", "table_rows"]


def generate(isa: str, limit: int | None = None) -> Iterator[dict[str, Any]]:
    """Every checked vector of ``isa`` with its id, in a fixed order (the first ``limit``
    candidates only, when given)."""
    checker = Checker(isa)
    n = 0
    for i, cand in enumerate(candidates(isa)):
        if limit is not None and i >= limit:
            break
        for record in vectors_for(checker, cand):
            record["id"] = f"{isa}/{n:05d}"
            n += 1
            yield record
    for record in kretprobe_vectors(isa):
        record["id"] = f"{isa}/{n:05d}"
        n += 1
        yield record


def table_rows(isa: str) -> set[str]:
    """The classes of the ISA's decode table, with the classes of unlisted instructions."""
    module = __import__(f"kprobe_ref.arch.{isa}.decode", fromlist=["doc_rows"])
    return {str(row[0]) for row in module.doc_rows() if not str(row[0]).startswith("(prefixed")}


def table_reasons(isa: str) -> set[str]:
    """Every reason code a rejection on this ISA can carry."""
    module = __import__(f"kprobe_ref.arch.{isa}.decode", fromlist=["doc_rows"])
    reasons = {str(row[3]) for row in module.doc_rows() if row[2] == "reject"}
    if isa == "x86_64":
        # The safety net under the table: no instruction reaches it while the table lists
        # every control transfer capstone knows (tests/test_x86_prefixes.py shows it firing).
        reasons.discard("control-flow-unclassified")
    return reasons


@dataclass
class Coverage:
    """Counts of one ISA's vectors by row and by verdict/reason."""

    rows: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    kretprobes: int = 0
    missing_rows: set[str] = field(default_factory=set)
    missing_reasons: set[str] = field(default_factory=set)
    unreachable: dict[str, set[str]] = field(default_factory=dict)
    """Rows no instruction reaches (x86_64 opcodes invalid in 64-bit mode): row -> the
    classes their encodings decode as instead."""


def coverage(isa: str, records: Iterable[dict[str, Any]]) -> Coverage:
    """Which rows and reasons ``records`` cover, and which of the table's they miss."""
    cov = Coverage()
    for rec in records:
        if rec["kind"] == "kretprobe":
            cov.kretprobes += 1
            continue
        cov.rows[rec["row"]] += 1
        if "target_row" in rec:
            cov.unreachable.setdefault(rec["target_row"], set()).add(rec["row"])
        cov.reasons[f"{rec['verdict']}:{rec['reason']}"] += 1
    cov.missing_rows = table_rows(isa) - set(cov.rows)
    cov.unreachable = {k: v for k, v in cov.unreachable.items() if k in cov.missing_rows}
    cov.missing_rows -= set(cov.unreachable)
    seen = {k.split(":", 1)[1] for k in cov.reasons if k.startswith("reject:")}
    cov.missing_reasons = table_reasons(isa) - seen
    return cov


def export(isa: str, out: Path) -> tuple[Path, Coverage]:
    """Write ``<out>/<isa>.jsonl``; return its path and the coverage."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{isa}.jsonl"
    records = list(generate(isa))
    path.write_text("".join(to_line(r) + "\n" for r in records))
    return path, coverage(isa, records)


def report(isa: str, cov: Coverage) -> list[str]:
    """The lines ``vectors export`` prints: totals, then counts per row and per reason."""
    total = sum(cov.rows.values())
    lines = [f"{isa}: {total} kprobe vectors over {len(cov.rows)} rows, "
             f"{cov.kretprobes} kretprobe vectors"]
    lines += [f"  row {name}: {n}" for name, n in sorted(cov.rows.items())]
    lines += [f"  {name}: {n}" for name, n in sorted(cov.reasons.items())]
    for name, got in sorted(cov.unreachable.items()):
        lines.append(f"  row {name}: 0 (its encodings decode as {', '.join(sorted(got))})")
    if cov.missing_rows:
        lines.append(f"  rows without a vector: {', '.join(sorted(cov.missing_rows))}")
    if cov.missing_reasons:
        lines.append(f"  reasons without a vector: {', '.join(sorted(cov.missing_reasons))}")
    return lines
