#!/usr/bin/env python3
"""List the LoongArch instruction kinds the P-code CPU executes when running the corpus.

Runs every case of every callable function of the bundled loongarch64 kernel image on
``Machine("loongarch64")`` (the P-code CPU), counts executions of every word of the image's
executable segments, and names each executed word by Ghidra's mnemonic with its aliases
resolved to the instruction they stand for (``move`` is ``or``, ``ret``/``jr`` are
``jirl``, ``nop`` is ``andi``).  Writes ``tests/vectors/loongarch64/corpus_kinds.json``;
``tests/test_loongarch_vector_coverage.py`` checks that every kind listed there is a kind of
the qemu vectors.  Rerun after changing the corpus::

    python tools/list_loongarch_corpus_kinds.py
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from kprobe_ref.arch.loongarch64.decode import disassemble
from kprobe_ref.tools.verify import Runner, bundled_image, bundled_specs

OUT = Path(__file__).resolve().parent.parent / "tests" / "vectors" / "loongarch64" / \
    "corpus_kinds.json"
ALIASES = {"move": "or", "ret": "jirl", "jr": "jirl", "nop": "andi"}
"""Ghidra's LoongArch alias mnemonics -> the instruction each one is."""


def corpus_kinds() -> dict[str, int]:
    """Kind -> number of distinct executed words of that kind."""
    r = Runner("loongarch64", bundled_image("loongarch64"))
    addrs: set[int] = set()
    for seg in r.image.segments:
        if "x" in seg.perms:
            addrs |= set(range(seg.vaddr, seg.vaddr + len(seg.data), 4))
    counts = r.m.watch(addrs)
    for name, spec in bundled_specs("loongarch64").items():
        if spec.callable:
            for case in spec.cases:
                r.run(name, case)
    kinds: Counter[str] = Counter()
    for addr, n in counts.items():
        if n:
            text = disassemble(r.m.read(addr, 4), addr)
            assert text is not None, hex(addr)
            mnem = text.split()[0]
            kinds[ALIASES.get(mnem, mnem)] += 1
    return dict(sorted(kinds.items()))


def main() -> int:
    kinds = corpus_kinds()
    OUT.write_text(json.dumps({
        "generator": "tools/list_loongarch_corpus_kinds.py",
        "image": "kprobe_ref/corpus/loongarch64/kernel.elf",
        "aliases": ALIASES,
        "kinds": kinds,
    }, indent=2) + "\n")
    print(f"{len(kinds)} kinds -> {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
