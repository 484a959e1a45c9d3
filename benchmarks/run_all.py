"""Every performance figure of the project, printed in one run.

Runs, one after another on the same machine, each benchmark that backs a performance claim,
with the arguments that produce the claimed figure, and prints their tables under a heading:

1. ``trap_cost.py``: traps per hit (stepped and simulated) and the machine's bare trap round
   trip beside unicorn's and the P-code CPU's own (goal: within 3x of unicorn's).
2. ``boost.py``: traps per pre-handler hit over every instruction of the bundled corpus
   (goal: at most 1.05), next to Linux's figures, and with ``--kernels DIR`` the boosted
   share over a sample of real kernels' functions.
3. ``registration.py``: register, unregister and hit cost from 10 to ``--count`` probes
   (goal: at most 1.2x at 100k, the hit unchanged).
4. ``audit_speed.py``: verified audit throughput against the baseline tree (goal: 5x).
5. ``pcode_speed.py``: the P-code CPU's instructions per second.

    PYTHONPATH=. python benchmarks/run_all.py [--kernels DIR] [--count 100000] [--quick]

``--quick`` shortens every benchmark (fewer calls, 10k probes, a smaller kernel sample) for
a look in a few minutes; the figures the goals refer to come from a run without it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _run(title: str, script: str, args: list[str]) -> None:
    print(f"\n=== {title}: {script} {' '.join(args)}", flush=True)
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    t = time.perf_counter()
    done = subprocess.run([sys.executable, str(HERE / script), *args], env=env, check=False)
    status = "" if done.returncode == 0 else f", exit status {done.returncode}"
    print(f"--- {script}: {time.perf_counter() - t:.0f} s{status}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kernels", type=Path, help="directory holding vmlinux-<isa> images")
    p.add_argument("--count", type=int, default=100_000, help="probes for registration.py")
    p.add_argument("--quick", action="store_true")
    a = p.parse_args()
    quick = a.quick
    _run("Trap cost", "trap_cost.py", ["--calls", "1000" if quick else "3000"])
    boost = ["--functions", "8"] if quick else []
    if a.kernels is not None:
        boost += ["--kernels", str(a.kernels), "--sample", "30" if quick else "300"]
    _run("Boosted slots", "boost.py", boost)
    _run("Registration", "registration.py",
         ["--count", str(min(a.count, 10_000) if quick else a.count)])
    _run("Audit throughput", "audit_speed.py", ["--arch", "x86_64"] if quick else [])
    _run("P-code CPU", "pcode_speed.py", [])


if __name__ == "__main__":
    main()
