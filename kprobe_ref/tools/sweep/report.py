"""Merging shard records into one report: counts, findings as patterns, row coverage.

- **counts**: words per (rule, SLEIGH class, capstone opinion), and per (verdict, SLEIGH
  class);
- **findings**: each disagreement of one kind, rule, SLEIGH class and capstone opinion,
  with its word count and its patterns (the shards' cubes merged again); each pattern says
  whether a known explanation (:mod:`~kprobe_ref.tools.sweep.known`) covers it and, on
  loongarch64, which of Ghidra's known errors (the P-code CPU's overrides) it touches;
- **coverage**: per decode row, the words it matched, by SLEIGH class, and the proof
  obligations that speak for it (``decode-disjoint``, ``decode-model``, ``simulate``; for
  ``plain``, ``decode-pc`` and the slot's ``copy``).

A finding *matters* when it is a stepped word that uses the PC or a simulated word whose
control flow SLEIGH sees otherwise, and no known explanation covers it: the sweep's exit
status is 1 when any does.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from kprobe_ref.tools.sweep import known, ours, patterns

__all__ = ["GATED", "build", "render"]

GATED = ("stepped-uses-pc", "simulated-class-mismatch")
SHOW = 8
"""Patterns listed per finding in the text report (the JSON report has all)."""


@lru_cache(maxsize=4)
def _obligations(isa: str) -> tuple[tuple[str, str, str], ...]:
    from kprobe_ref.proofs.runner import all_obligations

    return tuple((o.kind, o.klass, o.klass.split("#", 1)[0]) for o in all_obligations(isa))


def covering(isa: str, label: str, klass: str) -> list[str]:
    """The obligations (``kind:class``) that speak for the rule ``label`` of class
    ``klass``."""
    obs = _obligations(isa)
    if label == "plain":
        return [f"{k}:{c}" for k, c, _ in obs
                if k == "decode-pc" or (k == "slot" and c == "copy")]
    return [f"{k}:{c}" for k, c, base in obs
            if (k == "decode-disjoint" and c == label)
            or (k in ("decode-model", "simulate") and base == klass)]


def _pattern(isa: str, kind: str, cube: patterns.Cube, width: int) -> dict[str, Any]:
    why = known.explain(isa, kind, cube, width)
    return {"mask": cube[0], "value": cube[1], "words": patterns.size(cube, width),
            "pattern": patterns.fmt(cube, width), "explained": why,
            "sleigh_errors": known.sleigh_errors(isa, cube, width)}


def _findings(isa: str, recs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[int, str, str, str, str], list[Any]] = {}
    words: Counter[tuple[int, str, str, str, str]] = Counter()
    for rec in recs:
        for f in rec["findings"]:
            key = (rec["width"], f["kind"], f["rule"], f["sleigh"], f["capstone"])
            groups.setdefault(key, []).extend(tuple(c) for c in f["cubes"])
            words[key] += f["words"]
    out = []
    for key in sorted(groups):
        width, kind, rule, scls, cap = key
        cubes = patterns.merge(groups[key], width)
        pats = [_pattern(isa, kind, c, width) for c in cubes]
        out.append({"width": width, "kind": kind, "rule": rule, "sleigh": scls,
                    "capstone": cap, "words": words[key], "patterns": pats,
                    "matters": kind in GATED and any(p["explained"] is None for p in pats)})
    return out


def _coverage(isa: str, counts: Counter[tuple[int, str, str, str]]) -> list[dict[str, Any]]:
    out = []
    for width in (16, 32):
        rules = list(ours.rules(isa, width))
        if not rules and width == 16:
            continue
        for rule in [*rules, ours.PLAIN, ours.UNDECODABLE]:
            merged: Counter[str] = Counter()
            for (w, r, s, _), n in counts.items():
                if w == width and r == rule.label:
                    merged[s] += n
            out.append({"width": width, "rule": rule.label, "verdict": rule.verdict,
                        "reason": rule.reason, "words": sum(merged.values()),
                        "sleigh": dict(merged.most_common()),
                        "obligations": [] if rule.verdict == "reject"
                        else covering(isa, rule.label, rule.klass)})
    return out


def build(isa: str, recs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The merged report of ``isa``'s shard records."""
    counts: Counter[tuple[int, str, str, str]] = Counter()
    for rec in recs:
        for r, s, c, n in rec["counts"]:
            counts[rec["width"], r, s, c] += n
    verdict_of = {r.label: r.verdict for w in (16, 32) for r in ours.rules(isa, w)}
    verdict_of.update({"plain": "step", "undecodable": "reject"})
    pairs: Counter[tuple[str, str]] = Counter()
    for (_, r, s, _), n in counts.items():
        pairs[verdict_of[r], s] += n
    ranges = sorted((rec["width"], rec["lo"], rec["hi"]) for rec in recs)
    return {
        "isa": isa, "table": ours.fingerprint(isa), "shards": len(recs),
        "words": sum(rec["words"] for rec in recs),
        "cpu_seconds": round(sum(rec["seconds"] for rec in recs), 1),
        "ranges": _ranges(ranges),
        "versions": recs[0]["versions"] if recs else {},
        "counts": [[w, r, s, c, n] for (w, r, s, c), n in sorted(counts.items())],
        "verdict_vs_sleigh": [[v, s, n] for (v, s), n in sorted(pairs.items())],
        "findings": _findings(isa, recs),
        "coverage": _coverage(isa, counts),
    }


def _ranges(ranges: Sequence[tuple[int, int, int]]) -> list[list[int]]:
    out: list[list[int]] = []
    for w, lo, hi in ranges:
        if out and out[-1][0] == w and out[-1][2] == lo:
            out[-1][2] = hi
        else:
            out.append([w, lo, hi])
    return out


def matters(report: dict[str, Any]) -> bool:
    """Whether any finding is unexplained and of a gated kind."""
    return any(f["matters"] for f in report["findings"])


def render(report: dict[str, Any]) -> str:
    """The report as text."""
    isa = report["isa"]
    lines = [f"sweep {isa}: {report['words']:,} words in {report['shards']} shards "
             f"({report['cpu_seconds']:,} CPU s), table {report['table']}, "
             + ", ".join(f"{k} {v}" for k, v in report["versions"].items())]
    lines += ["  ranges: " + ", ".join(f"{w}-bit {lo:#x}:{hi:#x}"
                                       for w, lo, hi in report["ranges"]), "",
              "verdict   SLEIGH class                       words"]
    lines += [f"{v:<9} {s:<34} {n:>12,}" for v, s, n in report["verdict_vs_sleigh"]]
    lines += ["", "findings:"]
    if not report["findings"]:
        lines.append("  none")
    for f in report["findings"]:
        flag = "MATTERS " if f["matters"] else ""
        lines.append(f"  {flag}{f['kind']} ({f['width']}-bit): rule {f['rule']}, SLEIGH "
                     f"{f['sleigh']}, capstone {f['capstone']}: {f['words']:,} words, "
                     f"{len(f['patterns'])} patterns")
        for p in f["patterns"][:SHOW]:
            note = f"  [{p['explained']}]" if p["explained"] else ""
            if p["sleigh_errors"]:
                note += f"  [SLEIGH known wrong: {', '.join(p['sleigh_errors'])}]"
            lines.append(f"      {p['pattern']} {p['words']:>10,}{note}")
        if len(f["patterns"]) > SHOW:
            lines.append(f"      ... {len(f['patterns']) - SHOW} more (see the JSON report)")
    lines += ["", "decode rows (words matched, SLEIGH classes, proof obligations):"]
    for c in report["coverage"]:
        if not c["words"]:
            continue
        top = ", ".join(f"{s} {n:,}" for s, n in list(c["sleigh"].items())[:4])
        obs = f"{len(c['obligations'])} obligations" if c["obligations"] else (
            "no obligation" if c["verdict"] != "reject" else "rejected")
        lines.append(f"  {c['width']}-bit {c['rule']:<22} {c['verdict']:<8} "
                     f"{c['words']:>12,}  {obs}; {top}")
    return "\n".join(lines) + "\n"
