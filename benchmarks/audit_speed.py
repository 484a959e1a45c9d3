"""Instructions audited per second, per ISA: static verdicts only, and verified by running.

Audits the bundled corpus image of each ISA twice in one run, once without verification
(every function) and once verified (every function with inputs), and prints instructions
per second for both.  With ``--baseline REV`` the same measurement runs, in the same run and
alternating ISA by ISA, on the source tree of git revision ``REV`` (extracted to a temporary
directory and imported from there in a child process), and the speed-up of each figure is
printed beside it: the default, ``BASELINE``, is the tree before the trap path was made lazy
and slots boosted.  Each tree is measured ``--rounds`` times, alternately, and the best of
each is printed, so that a change in the host's load does not pass for a speed-up. Each tree
audits its own bundled images: a baseline from before the kernel-style images moved to the
kernel half audits them linked at 0x400000 (x86_64 and riscv64 then built without
``-mcmodel=kernel``/``medany``, a few instructions different),
so the ratios compare per-instruction rates rather than identical work.

    python benchmarks/audit_speed.py [--arch A] [--jobs N] [--baseline REV | --no-baseline]
                                       [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kprobe_ref.arch import ARCHES
from kprobe_ref.tools.audit import audit_image
from kprobe_ref.tools.verify import bundled_image, bundled_specs


def measure(isa: str, jobs: int) -> tuple[int, float, int, float]:
    image = bundled_image(isa)
    specs = bundled_specs(isa)
    t = time.perf_counter()
    _, static = audit_image(image, isa, specs=specs, jobs=jobs, verify=False)
    t_static = time.perf_counter() - t
    n_static = sum(len(f.instructions) for f in static)
    t = time.perf_counter()
    _, verified = audit_image(image, isa, specs=specs, jobs=jobs)
    t_verified = time.perf_counter() - t
    n_verified = sum(1 for f in verified for i in f.instructions if i.verified != "not-run")
    return n_static, n_static / t_static, n_verified, n_verified / t_verified


BASELINE = "91da961^1"
"""The tree the speed-up is measured against: before the lazy trap frame, boosted slots,
flat registration and the cheaper unicorn register and cache paths."""


def _extract(rev: str, into: Path) -> None:
    """Write the source tree of ``rev`` into ``into`` (nothing is checked out)."""
    repo = Path(__file__).resolve().parent.parent
    archive = subprocess.run(["git", "-C", str(repo), "archive", rev], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)


def _measure_at(tree: Path, isa: str, jobs: int) -> tuple[int, float, int, float]:
    """:func:`measure` on the tree at ``tree``, in a child process importing from it."""
    code = ("import json, sys; sys.argv = ['x']; from benchmarks.audit_speed import measure; "
            f"print(json.dumps(measure({isa!r}, {jobs})))")
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run([sys.executable, "-c", code], cwd=tree, env=env, check=True,
                         capture_output=True, text=True).stdout
    n_s, r_s, n_v, r_v = json.loads(out.strip().splitlines()[-1])
    return int(n_s), float(r_s), int(n_v), float(r_v)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", action="append", choices=sorted(ARCHES))
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--baseline", default=BASELINE, help="git revision to compare against")
    p.add_argument("--no-baseline", action="store_true")
    p.add_argument("--rounds", type=int, default=2,
                   help="measurements of each tree, alternating; the best is printed")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_baseline:
            _extract(args.baseline, Path(tmp))
        print(f"{'isa':12} {'static insns':>12} {'static/s':>10} {'verified insns':>15} "
              f"{'verified/s':>11}", end="")
        print(f"   (jobs={args.jobs})" if args.no_baseline else
              f" {'base static/s':>13} {'x':>6} {'base verified/s':>15} {'x':>6}   "
              f"(jobs={args.jobs}; baseline {args.baseline})")
        for isa in args.arch or sorted(ARCHES):
            r_s = r_v = b_s = b_v = 0.0
            for _ in range(args.rounds):  # alternate, keep the best of each
                n_s, s, n_v, v = measure(isa, args.jobs)
                r_s, r_v = max(r_s, s), max(r_v, v)
                if not args.no_baseline:
                    _, s, _, v = _measure_at(Path(tmp), isa, args.jobs)
                    b_s, b_v = max(b_s, s), max(b_v, v)
            line = f"{isa:12} {n_s:12} {r_s:10.0f} {n_v:15} {r_v:11.1f}"
            if not args.no_baseline:
                line += f" {b_s:13.0f} {r_s / b_s:6.2f} {b_v:15.1f} {r_v / b_v:6.2f}"
            print(line, flush=True)


if __name__ == "__main__":
    main()
