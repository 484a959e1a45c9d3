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


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kprobe-ref", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="probe the bundled sample programs")
    demo.add_argument("--arch", default="x86_64", choices=sorted(ARCHES))
    audit = sub.add_parser("audit", help="probe-safety report for a compiled image")
    audit.add_argument("image", nargs="?", help="static ELF image (default: the bundled corpus)")
    audit.add_argument("--arch", help="the image's ISA (checked against the image)")
    audit.add_argument("--function", action="append", default=[], help="audit only NAME")
    audit.add_argument("--inputs", help="argument lists for functions (JSON, see docs)")
    audit.add_argument("--json", action="store_true", help="machine-readable output")
    audit.add_argument("--jobs", type=int, default=1, help="worker processes")
    audit.add_argument("--fail-on-reject", action="append", default=[], metavar="NAME",
                       help="exit 1 if function NAME has an instruction that cannot be probed")
    audit.add_argument("--no-proofs", action="store_true",
                       help="do not run the proof obligations (no 'proved' column)")
    audit.add_argument("--progress", action="store_true",
                       help="show progress on standard error even when it is not a terminal")
    from kprobe_ref.proofs.commands import add_commands

    add_commands(sub)
    from kprobe_ref.conformance.commands import add_commands as add_vectors

    add_vectors(sub)
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
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            from kprobe_ref.demo import run_demo

            return run_demo(sys.stdout, args.arch)
        if args.command == "audit":
            return _audit(args)
        if args.command in ("prove", "reloc"):
            from kprobe_ref.proofs.commands import run

            return run(args)
        if args.command == "vectors":
            from kprobe_ref.conformance.commands import run as run_vectors

            return run_vectors(args)
    except KprobeError as exc:
        print(f"kprobe-ref: {exc}", file=sys.stderr)
        return 2
    return 2
