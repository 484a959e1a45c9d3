"""The proof subcommands of ``kprobe-ref``: ``prove`` and ``reloc``.

``kprobe_ref.tools.cli`` adds them with :func:`add_commands` and runs them with :func:`run`.
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


PROVE_EPILOG = """\
examples:
  kprobe-ref prove                      every obligation of every ISA (a line as each ends)
  kprobe-ref prove --arch riscv64 --json
exit status: 0 all proved, 1 an obligation failed, 2 bad input."""

RELOC_EPILOG = """\
examples:
  kprobe-ref reloc --arch x86_64 --bytes 0x488b0500001000 --addr 0x401000
  kprobe-ref reloc --arch x86_64 --asm 'mov rax, qword ptr [rip + 0x100000]' \\
      --addr 0x401000 --slot 0x7fff00000000
  kprobe-ref reloc --arch aarch64 --asm 'adr x0, .+16' --addr 0x401000
  kprobe-ref reloc --arch riscv64 --bytes 17150000 --addr 0x80001000
exit status: 0 proved or refused with a reason (an out-of-reach slot is an expected
refusal), 1 a counterexample, 2 bad input (bad hex, an address registration would
refuse: misaligned, or bytes that are not exactly one instruction)."""


def add_commands(sub: Any) -> None:
    """Add ``prove`` and ``reloc`` to the subcommand parsers ``sub``."""
    raw = argparse.RawDescriptionHelpFormatter
    prove = sub.add_parser("prove", help="run every proof obligation",
                           description="Run every proof obligation with Z3.",
                           epilog=PROVE_EPILOG, formatter_class=raw)
    prove.add_argument("--arch", default=None,
                       help="only this ISA (x86_64, aarch64, riscv64, loongarch64)")
    prove.add_argument("--json", action="store_true",
                       help="one JSON document at the end instead of the table")
    reloc = sub.add_parser("reloc", help="verdict, rule and proof for one instruction",
                           description="The verdict, the rule and its proof for one "
                                       "instruction at an address.",
                           epilog=RELOC_EPILOG, formatter_class=raw)
    reloc.add_argument("--arch", required=True,
                       help="the instruction's ISA (x86_64, aarch64, riscv64, loongarch64)")
    what = reloc.add_mutually_exclusive_group(required=True)
    what.add_argument("--bytes", dest="hex", metavar="HEX",
                      help="the instruction's bytes in memory order, hex (0x prefix and "
                           "spaces allowed)")
    what.add_argument("--asm", metavar="TEXT",
                      help="the instruction in assembly (x86_64: Intel or AT&T syntax), assembled "
                           "with the bundled clang; branch targets as .+OFFSET")
    reloc.add_argument("--addr", required=True,
                       help="the probe address (decimal or 0x hex)")
    reloc.add_argument("--slot", default=None,
                       help="the out-of-line slot address (default: 4 KiB after --addr)")


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
    """``--bytes``: hex digits, optionally ``0x``-prefixed, spaces and ``_`` ignored."""
    digits = "".join(text.split()).replace("_", "")
    if digits[:2].lower() == "0x":
        digits = digits[2:]
    try:
        code = bytes.fromhex(digits)
    except ValueError:
        raise BadInput(f"--bytes {text!r} is not hexadecimal") from None
    if not code:
        raise BadInput("--bytes is empty")
    return code


def _assembled(isa: str, text: str) -> bytes:
    from kprobe_ref.proofs.assemble import AssemblyError, assemble

    try:
        return assemble(isa, text)
    except AssemblyError as exc:
        raise BadInput(f"--asm {text!r}: {exc}") from None


def _check_placement(isa: str, code: bytes, addr: int) -> None:
    """Refuse what registration refuses before decoding: a misaligned address, and bytes
    that are not exactly one whole instruction."""
    from kprobe_ref.arch import get_arch

    arch = get_arch(isa)
    if addr % arch.insn_align:
        raise BadInput(f"--addr {addr:#x} is not {arch.insn_align}-byte aligned: "
                       f"registration refuses it")
    n = arch.insn_length(code, addr)
    if n == 0:
        return  # undecodable: explained as a rejection
    if n > len(code):
        raise BadInput(f"the instruction at {addr:#x} is {n} bytes long, only {len(code)} "
                       f"given")
    if n < len(code):
        raise BadInput(f"{len(code)} bytes given but the first instruction ends after {n}: "
                       f"{addr + n:#x} is the next instruction boundary (give one "
                       f"instruction)")


def run(args: argparse.Namespace) -> int:
    """Run ``prove`` or ``reloc``; exit status 0, 1 (a failed proof), or 2 (bad input)."""
    try:
        if args.command == "prove":
            from kprobe_ref.proofs.runner import prove_all

            return prove_all(sys.stdout, _arch(args.arch), args.json, progress=sys.stderr)
        from kprobe_ref.proofs.explain import explain

        isa = _arch(args.arch)
        assert isa is not None
        slot = None if args.slot is None else _number(args.slot, "--slot")
        addr = _number(args.addr, "--addr")
        code = _code(args.hex) if args.hex is not None else _assembled(isa, args.asm)
        _check_placement(isa, code, addr)
        return explain(sys.stdout, isa, code, addr, slot)
    except BadInput as exc:
        print(f"kprobe-ref: {exc}", file=sys.stderr)
        return 2
