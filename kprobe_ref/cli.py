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

Bad input (an unknown ISA, a missing file) prints one line to standard error and exits with
status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from kprobe_ref.arch import ARCHES
from kprobe_ref.errors import InvalidProbeDefinition, KprobeError

__all__ = ["main"]


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
    p = argparse.ArgumentParser(
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
    from kprobe_ref.conformance.commands import add_commands as add_vectors
    audit.add_argument("--progress", action="store_true",
                       help="show progress on standard error even when it is not a terminal")
    from kprobe_ref.proofs.commands import add_commands
    from kprobe_ref.sweep.commands import add_command
    from kprobe_ref.trace.command import add_command as add_trace

    add_commands(sub)
    add_vectors(sub)
    add_command(sub)
    add_trace(sub)
    return p


def _audit(args: argparse.Namespace) -> int:
    from pathlib import Path

    from kprobe_ref.audit import run
    from kprobe_ref.verify import bundled_image, bundled_specs, load_specs

    if args.jobs < 1:
        raise InvalidProbeDefinition("--jobs must be at least 1")
    if args.arch is not None and args.arch not in ARCHES:
        raise InvalidProbeDefinition(f"unknown ISA {args.arch!r} (known: {', '.join(ARCHES)})")
    specs = {}
    if args.inputs is not None:
        try:
            specs = load_specs(Path(args.inputs).read_text())
        except OSError as exc:
            raise InvalidProbeDefinition(f"cannot read {args.inputs}: {exc.strerror}") from None
    if args.image is not None and not args.function:
        from kprobe_ref.kernel.whole import is_kernel_image, run_kernel_audit

        if is_kernel_image(args.image):
            return run_kernel_audit(args.image, args.jobs, args.json, args.fail_on_reject,
                                    sys.stdout, sys.stderr, proofs=not args.no_proofs,
                                    specs=specs, isa=args.arch,
                                    show_progress=args.progress or sys.stderr.isatty())
    if args.image is None:
        isas = [args.arch] if args.arch else sorted(ARCHES)
        images = [(str(bundled_image(i)), i, specs or bundled_specs(i)) for i in isas]
    else:
        images = [(args.image, args.arch, specs)]
    return run(images, args.function, args.jobs, args.json, args.fail_on_reject, sys.stdout,
               sys.stderr, proofs=not args.no_proofs)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    from kprobe_ref.trace.command import join_dash_values

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["trace"]:
        argv = join_dash_values(argv)
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            from kprobe_ref.demo import run_demo

            return run_demo(sys.stdout, args.arch)
        if args.command == "audit":
            return _audit(args)
        if args.command == "trace":
            from kprobe_ref.trace.command import run as run_trace

            return run_trace(args)
        if args.command in ("prove", "reloc"):
            from kprobe_ref.proofs.commands import run

            return run(args)
        if args.command == "vectors":
            from kprobe_ref.conformance.commands import run as run_vectors

            return run_vectors(args)
        if args.command == "sweep":
            from kprobe_ref.sweep.commands import run as run_sweep

            return run_sweep(args)
    except KprobeError as exc:
        print(f"kprobe-ref: {exc}", file=sys.stderr)
        return 2
    return 2
