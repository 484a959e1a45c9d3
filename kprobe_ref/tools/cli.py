"""The ``kprobe-ref`` command.

Subcommands:

- ``demo [--arch A]``: probes on the bundled sample programs, compared with unprobed runs.
- ``prove [--arch A] [--json]``: run every proof obligation; a table (or JSON), counts per
  ISA and obligation kind, the total time; exit status 1 if any obligation fails.
- ``reloc --arch A --bytes HEX --addr ADDR [--slot ADDR]``: the verdict and rule for one
  instruction, and its proof for all register states or a concrete counterexample (exit
  status 1).
- ``audit [IMAGE] [--arch A] [--function NAME]... [--inputs FILE] [--json] [--jobs N]
  [--fail-on-reject NAME]...``: which instructions can be probed, by which rule, and why
  not; verified by running where inputs exist.  Without IMAGE: the bundled corpus.  A Linux
  kernel image without ``--function``: every function symbol, with the kernel's blacklist,
  streamed (``--json``: JSON lines) and summarised.
- ``vectors export [--arch A] --out DIR``: conformance vectors for ports, checked on the
  machine, as JSON Lines; counts per ISA, row and reason (``docs/conformance.md``).
- ``sweep --arch A [--range LO:HI] [--scheduler ADDRESS] ...``: every instruction word's
  verdict against Ghidra's SLEIGH specification, sharded on Dask (``docs/sweep.md``).
- ``trace [--arch A] [--image IMAGE] -e DEFINITION... --call 'FUNC(ARG, ...)'... [--json]``:
  probe events in the kernel's ``kprobe_events`` syntax, printed in ftrace format.

Exit status: 0 success; 1 a divergence, a failed proof or a failed ``--fail-on-reject``
gate; 2 bad input (an unknown ISA, a missing or malformed file, a bad option), reported in
one line on standard error and never as a traceback.  The same one line and status 2 report
an output that cannot be written (a closed pipe, a full disk) and, prefixed "internal
error", an unexpected failure; an interrupt exits with 130, ``SIGTERM`` with 143, and
worker processes never outlive the command.  ``docs/errors.md`` lists every case.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING, NoReturn

from kprobe_ref.arch import ARCHES
from kprobe_ref.errors import InvalidProbeDefinition, KprobeError

if TYPE_CHECKING:
    from kprobe_ref.tools.verify import FunctionSpec

__all__ = ["UsageError", "main"]


class UsageError(Exception):
    """A command line argparse cannot use (unknown option, missing or bad value)."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (no usage block), reported by
    :func:`main` with exit status 2."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("kprobe-ref").strip()
        raise UsageError(f"{command}: {message}" if command else message)


DEMO_EPILOG = """\
examples:
  kprobe-ref demo
  kprobe-ref demo --arch loongarch64"""

AUDIT_EPILOG = """\
examples:
  kprobe-ref audit                                  the bundled corpus of all four ISAs
  kprobe-ref audit vmlinux --function vfs_read --no-proofs
  kprobe-ref audit prog.elf --inputs inputs.json --fail-on-reject hot_path --json
exit status: 0, 1 a divergence or a --fail-on-reject function with a rejection, 2 bad
input.  docs/audit.md describes the inputs file."""

MAIN_EPILOG = """\
commands (kprobe-ref COMMAND --help for each):
  demo     kprobe-ref demo --arch aarch64
  audit    kprobe-ref audit IMAGE --inputs inputs.json
  prove    kprobe-ref prove --arch riscv64
  reloc    kprobe-ref reloc --arch x86_64 --bytes 0x7405 --addr 0x401000
  trace    kprobe-ref trace -e 'p:gcd_in gcd a=%di' --call 'gcd(48, 18)'
  vectors  kprobe-ref vectors export --arch riscv64 --out DIR
  sweep    kprobe-ref sweep --arch riscv64 --range 0x0:0x10000 --inline
exit status: 0 success, 1 a divergence, failed proof or failed gate, 2 bad input."""


def _parser() -> argparse.ArgumentParser:
    from kprobe_ref import __version__

    raw = argparse.RawDescriptionHelpFormatter
    p = _Parser(
        prog="kprobe-ref", epilog=MAIN_EPILOG, formatter_class=raw,
        description="kprobes, kretprobes, uprobes and uretprobes on x86_64, aarch64, "
                    "riscv64 and loongarch64: a reference implementation with proofs.",
    )
    p.add_argument("--version", action="version", version=f"kprobe-ref {__version__}",
                   help="print the version and exit")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = sub.add_parser("demo", help="probe the bundled sample programs",
                          description="Probes on the bundled sample programs, compared with "
                                      "unprobed runs.", epilog=DEMO_EPILOG,
                          formatter_class=raw)
    demo.add_argument("--arch", default="x86_64", choices=sorted(ARCHES),
                      help="the ISA whose sample programs run (default x86_64)")
    audit = sub.add_parser("audit", help="probe-safety report for a compiled image",
                           description="Which instructions of an image can be probed, by "
                                       "which rule, and why not.", epilog=AUDIT_EPILOG,
                           formatter_class=raw)
    audit.add_argument("image", nargs="?", help="static ELF image (default: the bundled corpus)")
    audit.add_argument("--arch", help="the image's ISA (checked against the image)")
    audit.add_argument("--function", action="append", default=[], help="audit only NAME")
    audit.add_argument("--inputs", help="argument lists for functions (JSON, see docs)")
    audit.add_argument("--json", action="store_true", help="machine-readable output")
    audit.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    audit.add_argument("--fail-on-reject", action="append", default=[], metavar="NAME",
                       help="exit 1 if function NAME has an instruction that cannot be probed")
    audit.add_argument("--no-proofs", action="store_true",
                       help="do not run the proof obligations (no 'proved' column)")
    from kprobe_ref.tools.conformance.commands import add_commands as add_vectors
    audit.add_argument("--progress", action="store_true",
                       help="show progress on standard error even when it is not a terminal")
    from kprobe_ref.proofs.commands import add_commands
    from kprobe_ref.tools.sweep.commands import add_command
    from kprobe_ref.tools.trace.command import add_command as add_trace

    add_commands(sub)
    add_vectors(sub)
    add_command(sub)
    add_trace(sub)
    return p


def _audit(args: argparse.Namespace) -> int:
    from kprobe_ref.tools.audit import run
    from kprobe_ref.tools.verify import bundled_image, bundled_specs
    from kprobe_ref.tools.workers import cap_jobs

    if args.jobs < 1:
        raise InvalidProbeDefinition("--jobs must be at least 1")
    jobs = cap_jobs(args.jobs, sys.stderr)
    if args.arch is not None and args.arch not in ARCHES:
        raise InvalidProbeDefinition(f"unknown ISA {args.arch!r} (known: {', '.join(ARCHES)})")
    specs: dict[str, FunctionSpec] = {}
    if args.inputs is not None:
        specs = _read_inputs(args.inputs)
    if args.image is not None and not args.function:
        from kprobe_ref.tools.kernel_audit.whole import is_kernel_image, run_kernel_audit

        if is_kernel_image(args.image):
            return run_kernel_audit(args.image, jobs, args.json, args.fail_on_reject,
                                    sys.stdout, sys.stderr, proofs=not args.no_proofs,
                                    specs=specs, isa=args.arch,
                                    show_progress=args.progress or sys.stderr.isatty())
    if args.image is None:
        isas = [args.arch] if args.arch else sorted(ARCHES)
        images = [(str(bundled_image(i)), i, specs or bundled_specs(i)) for i in isas]
    else:
        images = [(args.image, args.arch, specs)]
    _check_gate_names(images, args.function, args.fail_on_reject)
    return run(images, args.function, jobs, args.json, args.fail_on_reject, sys.stdout,
               sys.stderr, proofs=not args.no_proofs)


def _read_inputs(path: str) -> dict[str, FunctionSpec]:
    """Read and parse an ``--inputs`` file; every failure is an ``InvalidProbeDefinition``."""
    from kprobe_ref.tools.verify import load_specs

    try:
        with open(path, "rb") as fh:
            raw = fh.read(_INPUTS_LIMIT + 1)
    except OSError as exc:
        raise InvalidProbeDefinition(f"cannot read {path}: {exc.strerror}") from None
    if len(raw) > _INPUTS_LIMIT:
        raise InvalidProbeDefinition(f"{path}: inputs file larger than {_INPUTS_LIMIT} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidProbeDefinition(f"{path}: not UTF-8 text ({exc.reason} at byte "
                                     f"{exc.start})") from None
    return load_specs(text)


_INPUTS_LIMIT = 64 << 20


def _check_gate_names(images: list[tuple[str, str | None, dict[str, FunctionSpec]]],
                      functions: list[str], gate: list[str]) -> None:
    """Every ``--fail-on-reject`` name must be a function the audit will look at: a gate on
    no function would pass silently."""
    if not gate:
        return
    from kprobe_ref.sim.elf import read_image

    audited: set[str] = set()
    for path, isa, _specs in images:
        names = set(read_image(path, isa).functions)
        audited |= names & set(functions) if functions else names
    unknown = [n for n in gate if n not in audited]
    if unknown:
        raise InvalidProbeDefinition(
            f"--fail-on-reject {unknown[0]!r} names no audited function of "
            f"{', '.join(p for p, _, _ in images)}"
        )


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "demo":
        from kprobe_ref.tools.demo import run_demo

        return run_demo(sys.stdout, args.arch)
    if args.command == "audit":
        return _audit(args)
    if args.command == "vectors":
        from kprobe_ref.tools.conformance.commands import run as run_vectors

        return run_vectors(args)
    if args.command == "trace":
        from kprobe_ref.tools.trace.command import run as run_trace

        return run_trace(args)
    if args.command == "sweep":
        from kprobe_ref.tools.sweep.commands import run as run_sweep

        return run_sweep(args)
    from kprobe_ref.proofs.commands import run

    return run(args)


def _say(message: str) -> None:
    """One line on standard error (newlines in ``message`` folded)."""
    line = " ".join(str(message).split())
    try:
        sys.stderr.write(f"kprobe-ref: {line}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        return


def _drop_stdout() -> None:
    """Point standard output at the null device, so the interpreter's final flush of
    what is still buffered cannot fail again after a closed pipe or a full disk."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
    except (OSError, ValueError, AttributeError):
        return


@contextmanager
def _terminate_as_exit() -> Iterator[None]:
    """While the command runs, ``SIGTERM`` raises ``SystemExit(143)``, so pools are shut
    down and workers killed on the way out (the previous handler comes back after)."""
    def on_term(_signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(143)  # 128 + SIGTERM, as a shell reports it

    try:
        previous = signal.signal(signal.SIGTERM, on_term)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (see the module text)."""
    from kprobe_ref.proofs.commands import BadInput
    from kprobe_ref.sim.errors import MachineError
    from kprobe_ref.tools.trace.command import join_dash_values

    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["trace"]:
        args = join_dash_values(args)
    try:
        with _terminate_as_exit():
            status = _dispatch(_parser().parse_args(args))
            sys.stdout.flush()
            return status
    except (UsageError, KprobeError, BadInput) as exc:
        _say(str(exc))
    except MachineError as exc:
        _say(f"the emulated code failed: {exc}")
    except KeyboardInterrupt:
        _say("interrupted")
        return 130
    except BrokenPipeError:
        _drop_stdout()
        _say("standard output was closed")
    except OSError as exc:
        _drop_stdout()
        where = f"{exc.filename}" if exc.filename else "cannot write output"
        _say(f"{where}: {exc.strerror or exc}")
    except RecursionError:
        _say("input nested too deeply")
    except Exception as exc:  # the command line never shows a traceback
        _say(f"internal error: {type(exc).__name__}: {exc}")
    return 2
