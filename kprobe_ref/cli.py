"""The ``kprobe-ref`` command.

Subcommands:

- ``demo [--arch A]``: probes on the bundled sample programs, compared with unprobed runs.

Bad input (an unknown ISA, a missing file) prints one line to standard error and exits with
status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from kprobe_ref.arch import ARCHES
from kprobe_ref.errors import KprobeError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kprobe-ref", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="probe the bundled sample programs")
    demo.add_argument("--arch", default="x86_64", choices=sorted(ARCHES))
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            from kprobe_ref.demo import run_demo

            return run_demo(sys.stdout, args.arch)
    except KprobeError as exc:
        print(f"kprobe-ref: {exc}", file=sys.stderr)
        return 2
    return 2
