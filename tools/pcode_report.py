#!/usr/bin/env python3
"""Survey how Ghidra's LoongArch specification translates the LoongArch reference vectors.

For the first record of every instruction kind in ``tests/vectors/loongarch64/*.jsonl``
(written by ``tools/gen_loongarch_vectors.py``), every word is translated with pypcode
(``Loongarch:LE:64:lp64d``).  The report lists the kinds whose words do not translate at
all, and those whose last word (the instruction the kind is named after) disassembles under
another mnemonic.  It is information for whoever adds a kind or an override, not a check.

    python tools/pcode_report.py [--vectors DIR]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

VECTORS = Path(__file__).resolve().parent.parent / "tests" / "vectors" / "loongarch64"


def pcode_report(out_dir: Path) -> list[str]:
    """Kinds whose words pypcode cannot translate at all (information only).

    Every word of each kind's first record is translated; the disassembler's
    mnemonic for the last word (the instruction the kind is named after) is
    compared with the kind as well.
    """
    import pypcode

    lang = next(lang for arch in pypcode.Arch.enumerate() for lang in arch.languages
                if lang.id == "Loongarch:LE:64:lp64d")
    ctx = pypcode.Context(lang)
    failed: dict[str, str] = {}
    mnem: dict[str, str] = {}
    seen: set[str] = set()
    for path in sorted(out_dir.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            kind = rec["kind"]
            if kind in seen:
                continue
            seen.add(kind)
            pc = int(rec["pc"], 16)
            for i, w in enumerate(rec["words"]):
                blob = int(w, 16).to_bytes(4, "little")
                try:
                    tx = ctx.translate(blob, pc + 4 * i, max_instructions=1)
                    if not tx.ops:
                        failed[kind] = f"word {i}: no p-code ops"
                    dis = ctx.disassemble(blob, pc + 4 * i, max_instructions=1)
                    if i == len(rec["words"]) - 1 and dis.instructions[0].mnem.lower() != kind:
                        mnem[kind] = dis.instructions[0].mnem
                except Exception as exc:  # pypcode raises several error types
                    failed[kind] = f"word {i}: {type(exc).__name__}: {exc}"
    print(f"language {lang.id}: {len(seen)} kinds, {len(failed)} fail to translate")
    for kind, why in sorted(failed.items()):
        print(f"  {kind}: {why}")
    for kind, m in sorted(mnem.items()):
        print(f"  {kind}: disassembles as {m!r}")
    return sorted(failed)



def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--vectors", type=Path, default=VECTORS)
    pcode_report(ap.parse_args(argv).vectors)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
