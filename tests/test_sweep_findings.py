"""Every disagreement the committed sweep slices found (``tests/vectors/sweep/``), one test
per pattern.

For three words of each pattern (all free bits clear, all set, and a mix) the test
classifies the word again and checks that SLEIGH and capstone still see it as recorded, and
that our verdict either is still the recorded one, with the finding still explained where
its kind is gated, or has changed to one that no longer disagrees in a way that matters (a
table fix).  ``manifest.json`` says how each report was made.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kprobe_ref.tools.sweep import known, report, shard, sleigh

DATA = Path(__file__).resolve().parent / "vectors" / "sweep"


def _cases() -> list[Any]:
    out = []
    for path in sorted(DATA.glob("report-*.json")):
        rep = json.loads(path.read_text())
        for f in rep["findings"]:
            for k, p in enumerate(f["patterns"]):
                out.append(pytest.param(rep["isa"], f, p,
                                        id=f"{path.stem}-{f['kind']}-{f['rule']}-{k}"))
    return out


def _words(p: dict[str, Any], width: int) -> list[int]:
    free = ~p["mask"] & ((1 << width) - 1)
    mix = 0x5A5A_5A5A & free
    return sorted({p["value"], p["value"] | free, p["value"] | mix})


@pytest.mark.parametrize(("isa", "finding", "pattern"), _cases())
def test_finding_pattern(isa: str, finding: dict[str, Any], pattern: dict[str, Any]) -> None:
    width = finding["width"]
    for w in _words(pattern, width):
        words, rules, flags, cap = shard.classify(isa, width, w, w + 1)
        assert words == [w]
        assert sleigh.class_name(flags[0]) == finding["sleigh"], hex(w)
        if cap is not None:
            assert ("valid" if cap[0] else "invalid") == finding["capstone"], hex(w)
        kind = shard.kind_of(rules[0], flags[0])
        if rules[0].label == finding["rule"]:
            assert kind == finding["kind"], hex(w)
        if kind in report.GATED:
            cube = (((1 << width) - 1), w)
            assert known.explain(isa, kind, cube, width) is not None, hex(w)


def test_every_committed_slice_is_described_by_the_manifest() -> None:
    manifest = json.loads((DATA / "manifest.json").read_text())
    listed = {r["report"] for r in manifest["runs"]}
    assert listed == {p.name for p in DATA.glob("report-*.json")}
    for run in manifest["runs"]:
        rep = json.loads((DATA / run["report"]).read_text())
        assert rep["words"] == run["words"] and rep["isa"] == run["isa"]
        for f in rep["findings"]:
            if f["kind"] in report.GATED:
                for p in f["patterns"]:
                    cube = (p["mask"], p["value"])
                    assert known.explain(rep["isa"], f["kind"], cube, f["width"]), p["pattern"]
