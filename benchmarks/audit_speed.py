"""Instructions audited per second, per ISA: static verdicts only, and verified by running.

Audits the bundled corpus image of each ISA twice in one run, once without verification
(every function) and once verified (every function with inputs), and prints instructions
per second for both.

    python benchmarks/audit_speed.py [--arch A] [--jobs N]
"""

from __future__ import annotations

import argparse
import time

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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", action="append", choices=sorted(ARCHES))
    p.add_argument("--jobs", type=int, default=1)
    args = p.parse_args()
    print(f"{'isa':12} {'static insns':>12} {'static/s':>10} {'verified insns':>15} "
          f"{'verified/s':>11}   (jobs={args.jobs})")
    for isa in args.arch or sorted(ARCHES):
        n_s, r_s, n_v, r_v = measure(isa, args.jobs)
        print(f"{isa:12} {n_s:12} {r_s:10.0f} {n_v:15} {r_v:11.1f}")


if __name__ == "__main__":
    main()
