"""The qemu vectors cover what the P-code CPU runs: every instruction kind it executes in
the loongarch64 corpus (``corpus_kinds.json``, written by
``tools/list_loongarch_corpus_kinds.py``) is a vector kind, and every LoongArch override
is pinned by vectors of its kind."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kprobe_ref.sim.pcode.overrides.loongarch64 import OVERRIDES

VEC_DIR = Path(__file__).parent / "vectors" / "loongarch64"
MIN_CASES = 5


def _vector_kinds() -> dict[str, int]:
    counts: dict[str, int] = {}
    for path in VEC_DIR.glob("*.jsonl"):
        for line in path.read_text().splitlines():
            kind = json.loads(line)["kind"]
            counts[kind] = counts.get(kind, 0) + 1
    return counts


def _corpus() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VEC_DIR / "corpus_kinds.json").read_text())
    return data


def test_every_corpus_executed_kind_has_vectors() -> None:
    vectors = _vector_kinds()
    corpus = _corpus()["kinds"]
    assert len(corpus) >= 80
    missing = sorted(k for k in corpus if vectors.get(k, 0) < MIN_CASES)
    assert missing == []


def test_every_override_is_pinned_by_vectors() -> None:
    vectors = _vector_kinds()
    missing = sorted(o.mnemonic for o in OVERRIDES if vectors.get(o.mnemonic, 0) < MIN_CASES)
    assert missing == []


def test_aliases_resolve_to_vector_kinds() -> None:
    vectors = _vector_kinds()
    assert all(target in vectors for target in _corpus()["aliases"].values())
