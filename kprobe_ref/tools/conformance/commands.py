"""The ``vectors`` subcommand of ``kprobe-ref``: ``vectors export [--arch A] --out DIR``.

Writes ``DIR/<isa>.jsonl`` for the ISA (every ISA without ``--arch``) and prints the count
of vectors per ISA, per decode-table row and per verdict and reason code.  Exit status 0
when every row and every rejection reason of the table has a vector, 1 when the machine
disagrees with a vector or coverage is incomplete, 2 for bad input (an unwritable
directory).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from kprobe_ref.arch import ARCHES
from kprobe_ref.errors import InvalidProbeDefinition

__all__ = ["add_commands", "run"]


def add_commands(sub: Any) -> None:
    """Add ``vectors export`` to the CLI's subparsers."""
    raw = argparse.RawDescriptionHelpFormatter
    epilog = ("examples:\n"
              "  kprobe-ref vectors export --out vectors/\n"
              "  kprobe-ref vectors export --arch riscv64 --out /tmp/v\n"
              "docs/conformance.md gives the schema and how a port consumes the vectors.")
    vectors = sub.add_parser("vectors", help="conformance vectors for ports",
                             description="Conformance vectors for ports.", epilog=epilog,
                             formatter_class=raw)
    action = vectors.add_subparsers(dest="vectors_command", required=True,
                                    metavar="ACTION", help="export: write the vectors")
    export = action.add_parser("export", help="write checked vectors as JSON Lines",
                               description="Write checked vectors as JSON Lines.",
                               epilog=epilog, formatter_class=raw)
    export.add_argument("--arch", choices=sorted(ARCHES), help="one ISA (default: all)")
    export.add_argument("--out", required=True, help="output directory")


def _say(lines: list[str]) -> None:
    """Print the report; a reader that went away (``| head``) is not an error."""
    try:
        print("\n".join(lines), flush=True)
    except BrokenPipeError:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - kept open for the interpreter's exit


def run(args: argparse.Namespace) -> int:
    """Run ``vectors export``; returns the exit status."""
    from kprobe_ref.tools.conformance.check import CheckFailed
    from kprobe_ref.tools.conformance.export import export, report

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InvalidProbeDefinition(f"--out {out}: not a directory")
    status = 0
    for isa in [args.arch] if args.arch else sorted(ARCHES):
        try:
            path, cov = export(isa, out)
        except CheckFailed as exc:
            print(f"kprobe-ref: {isa}: vector check failed: {exc}", file=sys.stderr)
            return 1
        except OSError as exc:
            raise InvalidProbeDefinition(f"cannot write to {out}: {exc.strerror}") from None
        _say([*report(isa, cov), f"  written to {path}"])
        if cov.missing_rows or cov.missing_reasons:
            status = 1
    return status
