"""``kprobe-ref trace``: probe events in the kernel's syntax, ftrace output.

::

    kprobe-ref trace [--arch A] [--image IMAGE] -e DEFINITION... --call 'FUNC(ARG, ...)'...
                     [--json]

``-e`` and ``--call`` are carried out in command-line order, so ``-e '-:EVENT'`` between two
calls removes a probe for the second.  ``--call 'FUNC(ARGS)'`` calls a function of the
kernel image; ``--call 'PATH:FUNC(ARGS)'`` calls it in a process spawned from the user
image ``PATH`` (one process per file, reused), where that file's uprobes are installed.
An argument is an integer (``-3``, ``0x30``) or a string literal (``"text"``, passed as a
pointer to a NUL-terminated copy).

A definition the kernel refuses is printed as tracefs ``error_log`` shows it and the exit
status is 2; a guest fault in a call exits 1 after printing the events recorded so far.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from typing import Any, TextIO

from kprobe_ref.errors import InvalidProbeDefinition, KprobeError

__all__ = ["EPILOG", "add_command", "join_dash_values", "parse_call", "run"]

EPILOG = """\
examples:
  kprobe-ref trace --arch x86_64 -e 'p:gcd_in gcd a=%di b=%si' \\
      -e 'r:gcd_out gcd ret=$retval' --call 'gcd(48, 18)'
  kprobe-ref trace --arch aarch64 -e 'p hand_strlen s=+0(%x0):string' \\
      --call 'hand_strlen("hello")'
  kprobe-ref trace --arch riscv64 -e 'p:u kprobe_ref/corpus/riscv64/user.elf:0x20ee %a0' \\
      --call 'kprobe_ref/corpus/riscv64/user.elf:gcd(4, 6)'
  kprobe-ref trace -e 'p:g gcd' --call 'gcd(4, 6)' -e '-:g' --call 'gcd(8, 12)'
grammar: Linux 6.12 Documentation/trace/kprobetrace.rst and uprobetracer.rst; see
docs/trace.md for every form and error."""


class _Ordered(argparse.Action):
    """Collect ``-e`` and ``--call`` into one list in command-line order."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        steps = list(getattr(namespace, "steps", None) or [])
        steps.append((self.dest, values))
        namespace.steps = steps


def join_dash_values(argv: list[str]) -> list[str]:
    """Glue ``-e`` to a value that starts with ``-`` (``-e '-:EVENT'``), which argparse
    would otherwise take for an option."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] == "-e" and i + 1 < len(argv) and argv[i + 1].startswith("-"):
            out.append(f"-e{argv[i + 1]}")
            i += 2
            continue
        out.append(argv[i])
        i += 1
    return out


def add_command(sub: Any) -> None:
    """Add ``trace`` to the subcommand parsers ``sub``."""
    p = sub.add_parser(
        "trace", help="probe events in the kernel's kprobe_events syntax, ftrace output",
        description="Probe events in the kernel's kprobe_events/uprobe_events syntax, "
                    "recorded on the simulated machine, printed in ftrace format.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--arch", default=None,
                   help="ISA of the bundled image (default x86_64, or the --image's)")
    p.add_argument("--image", default=None,
                   help="static ELF kernel image to probe (default: the bundled one)")
    p.add_argument("-e", dest="define", action=_Ordered, metavar="DEFINITION",
                   help="a kprobe_events/uprobe_events command: p, r or -: (repeatable)")
    p.add_argument("--call", dest="call", action=_Ordered, metavar="'[PATH:]FUNC(ARGS)'",
                   help="call FUNC of the kernel image, or of a process of user image PATH")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(steps=[])


_CALL = re.compile(r"^\s*(?:(?P<path>.*):)?(?P<func>[A-Za-z_.$][\w.$]*)\s*\((?P<args>.*)\)\s*$",
                   re.S)


def parse_call(text: str) -> tuple[str | None, str, list[int | bytes]]:
    """``[PATH:]FUNC(ARG, ...)`` -> ``(path, func, args)``; strings become NUL-terminated
    bytes.  Bad syntax is an ``InvalidProbeDefinition``."""
    m = _CALL.match(text)
    if m is None:
        raise InvalidProbeDefinition(f"--call {text!r}: expected [PATH:]FUNC(ARG, ...)")
    inner = m["args"].strip()
    try:
        values = ast.literal_eval(f"({inner},)") if inner else ()
    except (ValueError, SyntaxError):
        raise InvalidProbeDefinition(
            f"--call {text!r}: arguments are integers or string literals"
        ) from None
    args: list[int | bytes] = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | str | bytes):
            raise InvalidProbeDefinition(
                f"--call {text!r}: {v!r} is not an integer or a string"
            )
        args.append(v.encode() + b"\0" if isinstance(v, str) else
                    v + b"\0" if isinstance(v, bytes) else v)
    return m["path"], m["func"], args


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None
        ) -> int:
    """Run ``trace``: 0, 1 (a call faulted) or 2 (bad input)."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    from kprobe_ref.tools.trace.grammar import DefinitionError
    from kprobe_ref.tools.trace.runner import Runner

    try:
        runner = Runner.create(args.arch, args.image)
    except KprobeError as exc:
        print(f"kprobe-ref: {exc}", file=err)
        return 2
    status = 0
    try:
        for kind, value in args.steps:
            if kind == "define":
                runner.session.define(value)
            else:
                status = runner.call(value)
                if status:
                    break
    except DefinitionError as exc:
        runner.flush(out, args.json)
        _print_definition_error(exc, err)
        return 2
    except KprobeError as exc:
        runner.flush(out, args.json)
        print(f"kprobe-ref: {exc}", file=err)
        return 2
    runner.flush(out, args.json)
    if runner.failure:
        print(f"kprobe-ref: {runner.failure}", file=err)
    return status


def _print_definition_error(exc: Exception, err: TextIO) -> None:
    from kprobe_ref.tools.trace.grammar import DefinitionError

    assert isinstance(exc, DefinitionError)
    log = exc.error_log()
    print(f"kprobe-ref: trace: {log.rstrip()}", file=err)
    if exc.detail:
        print(f"kprobe-ref: trace: {exc.detail}", file=err)
