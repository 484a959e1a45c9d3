"""Print the encoding sweep's throughput per core and check a sharded slice run.

Run: ``python benchmarks/sweep_speed.py [--isa A]... [--slice-bits 24] [--shard-bits 21]
[--workers 2] [--sample-blocks 64] [--out DIR]``.

For each ISA:

1. **Throughput**: ``--sample-blocks`` blocks of 4,096 words at random places of the word
   space, classified in this process; words/s on one core, and the projected wall time of
   the whole space (aarch64, loongarch64: 2^32 words; riscv64: the 2^30 32-bit words plus
   49,152 halfwords) on 1, 64 and 1,024 cores.
2. **Slice** (unless ``--slice-bits 0``): the ``2^slice-bits``-word slice listed in
   :data:`SLICES` on a Dask ``LocalCluster`` of ``--workers`` processes, in two runs: the
   first half of the shards (a sweep stopped half-way), then all of them (the resume must
   run only the second half); then the same slice in one process without Dask.  The two
   merged reports must be equal (counts, findings, patterns, coverage); the script exits 1
   if they are not.  Reports and checkpoints stay in ``--out``.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kprobe_ref.tools.sweep import engine, plan, report
from kprobe_ref.tools.sweep.shard import run_shard

SLICES = {"aarch64": (32, 0xD500_0000), "riscv64": (32, 0x0000_0000),
          "loongarch64": (32, 0x0000_0000)}
"""Where each ISA's slice starts: aarch64 the system space (hints, MSR, MRS), riscv64 every
opcode with immediates' high bits clear, loongarch64 the densely allocated low space
(integer operations, BREAK, SYSCALL)."""
FULL = {"aarch64": 1 << 32, "riscv64": (1 << 30) + 49_152, "loongarch64": 1 << 32}


def _rate(isa: str, blocks: int) -> float:
    rng = random.Random(isa)
    words, secs = 0, 0.0
    for _ in range(blocks):
        lo = rng.randrange(0, 1 << 32, 1 << 12)
        t = time.perf_counter()
        rec = run_shard(isa, 32, lo, lo + (1 << 12))
        secs += time.perf_counter() - t
        words += rec["words"]
    return words / secs


def _hms(s: float) -> str:
    return f"{int(s) // 3600}:{int(s) // 60 % 60:02d}:{int(s) % 60:02d}"


def _comparable(rep: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in rep.items() if k not in ("cpu_seconds",)}


def _slice(isa: str, bits: int, shard_bits: int, workers: int, out: Path) -> bool:
    width, lo = SLICES[isa]
    shards = plan.plan(isa, width, lo, lo + (1 << bits), 1 << shard_bits)
    dask_dir, inline_dir = out / "dask", out / "inline"
    half = shards[: len(shards) // 2]
    log = io.StringIO()
    t = time.perf_counter()
    engine.sweep(half, str(dask_dir), workers=workers, progress=log)
    t_half = time.perf_counter() - t
    log2 = io.StringIO()
    t = time.perf_counter()
    recs = engine.sweep(shards, str(dask_dir), workers=workers, progress=log2)
    t_rest = time.perf_counter() - t
    resumed = f"{len(shards) - len(half)} of {len(shards)} shards to run" in log2.getvalue()
    again = engine.sweep(shards, str(dask_dir), workers=workers, progress=io.StringIO())
    t = time.perf_counter()
    single = engine.sweep(shards, str(inline_dir), inline=True, progress=io.StringIO())
    t_inline = time.perf_counter() - t
    rep_d, rep_s = report.build(isa, recs), report.build(isa, single)
    rep_again = report.build(isa, again)
    same = _comparable(rep_d) == _comparable(rep_s) == _comparable(rep_again)
    (out / f"report-{isa}.json").write_text(json.dumps(rep_d, indent=1) + "\n")
    (out / f"report-{isa}.txt").write_text(report.render(rep_d))
    words = rep_d["words"]
    print(f"  slice {width}-bit {lo:#x}:{lo + (1 << bits):#x}: {words:,} words in "
          f"{len(shards)} shards")
    print(f"    dask ({workers} workers): {t_half:.1f} s for half, {t_rest:.1f} s to resume "
          f"the rest ({'only the missing shards ran' if resumed else 'RESUME WRONG'}); "
          f"{words / (t_half + t_rest) / workers:,.0f} words/s per worker")
    print(f"    one process: {t_inline:.1f} s, {words / t_inline:,.0f} words/s")
    print(f"    merged reports equal (dask, re-report, one process): {same}; "
          f"findings {len(rep_d['findings'])}, "
          f"that matter {sum(f['matters'] for f in rep_d['findings'])}")
    return same and resumed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--isa", action="append", choices=plan.ISAS)
    ap.add_argument("--slice-bits", type=int, default=24)
    ap.add_argument("--shard-bits", type=int, default=21)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--sample-blocks", type=int, default=64)
    ap.add_argument("--out", help="results directory (default: a temporary one)")
    args = ap.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="sweep-bench-"))
    ok = True
    for isa in args.isa or list(plan.ISAS):
        rate = _rate(isa, args.sample_blocks)
        proj = ", ".join(f"{n:,} cores {_hms(FULL[isa] / rate / n)}" for n in (1, 64, 1024))
        print(f"{isa}: {rate:,.0f} words/s per core ({args.sample_blocks} random blocks); "
              f"full space {FULL[isa]:,} words: {proj}")
        if args.slice_bits:
            ok &= _slice(isa, args.slice_bits, args.shard_bits, args.workers, out / isa)
        sys.stdout.flush()
    print(f"results in {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
