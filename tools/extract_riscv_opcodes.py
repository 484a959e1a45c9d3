"""Extract the RV64 encoding table from a checkout of riscv-opcodes into
``kprobe_ref/sweep/data/riscv-opcodes.json`` (and its manifest).

Run: ``python tools/extract_riscv_opcodes.py GIT_DIR`` where ``GIT_DIR`` is a clone (or bare
mirror) of https://github.com/riscv/riscv-opcodes.  Every ratified extension file that
applies to RV64 (``extensions/rv_*`` and ``extensions/rv64_*``; not ``rv32_*``, not
``unratified``) is read, with argument bit ranges from ``arg_lut.csv`` and the few the
generator defines in ``src/riscv_opcodes/constants.py``; ``$import`` and ``$pseudo_op``
lines are aliases of instructions defined elsewhere and are skipped.  Each instruction
becomes ``{name, ext, width, mask, match, exclude}``: the fixed bit ranges give
``mask``/``match``; argument names carry the vendor's constraints (``_n0``: not zero;
``_n2``: neither 0 nor 2; ``nz`` immediates: not all zero, over their ``hi``/``lo`` pieces
together; not for ``c.nop``, whose ``nzimm`` fields must be zero, a non-zero value being a
HINT), written as ``exclude``: ``[mask, value]`` pairs a word of the instruction must not
match.
"""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "kprobe_ref" / "sweep" / "data"


def _git(repo: str, *args: str) -> str:
    return subprocess.run(["git", "--git-dir", repo, *args], check=True, capture_output=True,
                          text=True).stdout


def _field_mask(hi: int, lo: int) -> int:
    return ((1 << (hi - lo + 1)) - 1) << lo


def _parse(line: str, args: dict[str, tuple[int, int]]) -> dict[str, object] | None:
    toks = line.split()
    name, rest = toks[0], toks[1:]
    mask = match = 0
    exclude: list[list[int]] = []
    nz: dict[str, int] = {}
    for t in rest:
        m = re.fullmatch(r"(\d+)\.\.(\d+)=(\w+)", t) or re.fullmatch(r"(\d+)()=(\w+)", t)
        if m:
            hi = int(m.group(1))
            lo = int(m.group(2)) if m.group(2) else hi
            fm = _field_mask(hi, lo)
            mask |= fm
            match |= (int(m.group(3), 0) << lo) & fm
            continue
        hi, lo = args[t]
        fm = _field_mask(hi, lo)
        if "_n0" in t or "_n2" in t:
            exclude.append([fm, 0])
        if "_n2" in t:
            exclude.append([fm, 2 << lo])
        if "nz" in t and name != "c.nop":
            key = re.sub(r"(hi|lo)$", "", t)
            nz[key] = nz.get(key, 0) | fm
    exclude += [[fm, 0] for fm in nz.values()]
    width = 16 if mask < 1 << 16 and (match & 3) != 3 else 32
    return {"name": name, "width": width, "mask": mask, "match": match, "exclude": exclude}


def main(repo: str) -> None:
    commit = _git(repo, "rev-parse", "HEAD").strip()
    args = {row[0]: (int(row[1]), int(row[2]))
            for row in csv.reader(io.StringIO(_git(repo, "show", "HEAD:arg_lut.csv")),
                                  skipinitialspace=True) if row}
    extra = _git(repo, "show", "HEAD:src/riscv_opcodes/constants.py")
    for m in re.finditer(r'arg_lut\["(\w+)"\] = \((\d+), (\d+)\)', extra):
        args.setdefault(m.group(1), (int(m.group(2)), int(m.group(3))))
    files = [f for f in _git(repo, "ls-tree", "--name-only", "HEAD", "extensions/").split()
             if re.match(r"extensions/rv(64)?_", f)]
    table = []
    for f in sorted(files):
        for raw in _git(repo, "show", f"HEAD:{f}").splitlines():
            line = raw.split("#", 1)[0].strip()
            if not line or line.startswith("$"):
                continue
            rec = _parse(line, args)
            if rec is not None:
                rec["ext"] = f.split("/", 1)[1]
                table.append(rec)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "riscv-opcodes.json").write_text(json.dumps(table, indent=0) + "\n")
    manifest = {
        "file": "riscv-opcodes.json",
        "source": "https://github.com/riscv/riscv-opcodes",
        "commit": commit,
        "license": "BSD-3-Clause (Copyright (c) 2022 RISC-V International); data only, "
                   "derived from extensions/rv_* and extensions/rv64_* and arg_lut.csv",
        "generator": "tools/extract_riscv_opcodes.py",
        "instructions": len(table),
    }
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"{len(table)} instructions from {len(files)} files at {commit}")


if __name__ == "__main__":
    main(sys.argv[1])
