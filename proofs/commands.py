"""The proof subcommands of ``kprobe-ref``: ``prove`` and ``reloc``.

``kprobe_ref.cli`` adds them with :func:`add_commands` and runs them with :func:`run`.
Bad input (bad hex, an unknown ISA, an address that is not a 64-bit number) raises
:class:`BadInput`, which the command line reports in one line with exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["COMMANDS", "BadInput", "add_commands", "run"]

COMMANDS = ("prove", "reloc")


class BadInput(Exception):
    """A command-line argument that cannot be used."""


def add_commands(sub: Any) -> None:
    """Add ``prove`` and ``reloc`` to the subcommand parsers ``sub``."""
    prove = sub.add_parser("prove", help="run every proof obligation")
    prove.add_argument("--arch", default=None)
    prove.add_argument("--json", action="store_true")
    reloc = sub.add_parser("reloc", help="verdict, rule and proof for one instruction")
    reloc.add_argument("--arch", required=True)
    reloc.add_argument("--bytes", required=True, dest="hex")
    reloc.add_argument("--addr", required=True)
    reloc.add_argument("--slot", default=None)


def _number(text: str, what: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise BadInput(f"{what} {text!r} is not a number") from None
    if not 0 <= value < 1 << 64:
        raise BadInput(f"{what} {text!r} is not a 64-bit address")
    return value


def _arch(name: str | None) -> str | None:
    from kprobe_ref.arch import ARCHES

    if name is not None and name not in ARCHES:
        raise BadInput(f"unknown ISA {name!r} (known: {', '.join(sorted(ARCHES))})")
    return name


def _code(text: str) -> bytes:
    try:
        code = bytes.fromhex(text)
    except ValueError:
        raise BadInput(f"--bytes {text!r} is not hexadecimal") from None
    if not code:
        raise BadInput("--bytes is empty")
    return code


def run(args: argparse.Namespace) -> int:
    """Run ``prove`` or ``reloc``; exit status 0, 1 (a failed proof), or 2 (bad input)."""
    try:
        if args.command == "prove":
            from kprobe_ref.proofs.runner import prove_all

            return prove_all(sys.stdout, _arch(args.arch), args.json)
        from kprobe_ref.proofs.explain import explain

        isa = _arch(args.arch)
        assert isa is not None
        slot = None if args.slot is None else _number(args.slot, "--slot")
        return explain(sys.stdout, isa, _code(args.hex), _number(args.addr, "--addr"), slot)
    except BadInput as exc:
        print(f"kprobe-ref: {exc}", file=sys.stderr)
        return 2
