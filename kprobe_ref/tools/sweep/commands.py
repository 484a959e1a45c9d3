"""``kprobe-ref sweep``: the exhaustive encoding sweep from the command line.

``sweep --arch A [--width W] [--range LO:HI] [--shard-size N] [--results DIR]
[--scheduler ADDRESS | --workers N | --inline] [--report-only] [--json FILE]`` and
``sweep --arch riscv64 --vendor`` (the decode rows against riscv-opcodes).

Without ``--range`` every space of the ISA is swept whole (riscv64: the 16-bit and the
32-bit space; ``--width`` picks one).  The text report goes to standard output and
``report-<isa>.json`` into the results directory (or to ``--json FILE``).  Exit status: 0,
1 when a finding matters (a stepped word that uses the PC, a simulated word whose control
flow SLEIGH sees otherwise, not explained), 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from kprobe_ref.errors import InvalidProbeDefinition

__all__ = ["add_command", "run"]


def add_command(sub: Any) -> None:
    """Add the ``sweep`` subcommand to the CLI's subparsers."""
    epilog = ("examples:\n"
              "  kprobe-ref sweep --arch riscv64 --width 16 --inline\n"
              "  kprobe-ref sweep --arch aarch64 --range 0xd5000000:0xd6000000 --results r\n"
              "  kprobe-ref sweep --arch loongarch64 --scheduler tcp://127.0.0.1:8786\n"
              "exit status: 0, 1 an unexplained disagreement, 2 bad input.  docs/sweep.md.")
    p = sub.add_parser("sweep", help="classify every instruction word against SLEIGH",
                       description="Every instruction word's verdict against Ghidra's SLEIGH "
                                   "specification and capstone, sharded on Dask.",
                       epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", required=True, help="aarch64, riscv64 or loongarch64")
    p.add_argument("--width", type=int, choices=(16, 32),
                   help="riscv64: sweep only the 16-bit or the 32-bit space")
    p.add_argument("--range", dest="range_", metavar="LO:HI", help="sweep words LO <= w < HI")
    p.add_argument("--shard-size", type=lambda s: int(s, 0), default=None,
                   help="words per shard, a power of two (default 2**22)")
    p.add_argument("--results", default="sweep-results",
                   help="checkpoint and report directory (default ./sweep-results)")
    eng = p.add_mutually_exclusive_group()
    eng.add_argument("--scheduler", metavar="ADDRESS",
                     help="run on an existing Dask cluster (tcp://host:8786)")
    eng.add_argument("--workers", type=int, help="LocalCluster worker processes (default: "
                     "one per core)")
    eng.add_argument("--inline", action="store_true", help="run in this process, no Dask")
    p.add_argument("--report-only", action="store_true",
                   help="report the checkpointed shards without running any")
    p.add_argument("--json", metavar="FILE", help="write the JSON report here")
    p.add_argument("--vendor", action="store_true",
                   help="riscv64: check the decode rows against riscv-opcodes and stop")


def _shards(args: argparse.Namespace) -> list[Any]:
    from kprobe_ref.tools.sweep.plan import DEFAULT_SHARD, parse_range, plan, space_widths

    widths = space_widths(args.arch)
    if args.width is not None:
        if args.width not in widths:
            raise InvalidProbeDefinition(f"{args.arch} has no {args.width}-bit space")
        widths = (args.width,)
    if args.range_ is not None and len(widths) > 1:
        widths = (32,)
    if args.workers is not None and args.workers < 1:
        raise InvalidProbeDefinition("--workers must be at least 1")
    out = []
    for w in widths:
        lo, hi = parse_range(args.range_, w) if args.range_ else (0, 1 << w)
        out += plan(args.arch, w, lo, hi, args.shard_size or DEFAULT_SHARD)
    return out


def _vendor(isa: str) -> int:
    from kprobe_ref.tools.sweep import vendor

    if isa != "riscv64":
        raise InvalidProbeDefinition(
            f"no machine-readable vendor encoding table for {isa}; the sweep's capstone and "
            "SLEIGH columns are its two independent decoders")
    found = vendor.check()
    sys.stdout.write(vendor.render(found))
    return 1 if any(f.explained is None for f in found) else 0


def run(args: argparse.Namespace) -> int:
    """Run or re-report a sweep; return the exit status."""
    from kprobe_ref.tools.sweep import engine, ours, report, store

    if args.vendor:
        return _vendor(args.arch)
    shards = _shards(args)
    if args.report_only:
        have = store.Store(args.results, args.arch).load(ours.fingerprint(args.arch),
                                                          engine.tool_versions())
        missing = [s for s in shards if s.name not in have]
        if missing:
            raise InvalidProbeDefinition(
                f"{len(missing)} of {len(shards)} shards are not checkpointed in "
                f"{args.results} (first: {missing[0].name}); run without --report-only")
        recs = [have[s.name] for s in shards]
    else:
        try:
            recs = engine.sweep(shards, args.results, scheduler=args.scheduler,
                                workers=args.workers, inline=args.inline)
        except OSError as exc:
            raise InvalidProbeDefinition(f"cannot reach the Dask scheduler: {exc}") from None
    rep = report.build(args.arch, recs)
    out = Path(args.json) if args.json else Path(args.results) / f"report-{args.arch}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rep, indent=1) + "\n")
    sys.stdout.write(report.render(rep))
    return 1 if report.matters(rep) else 0
