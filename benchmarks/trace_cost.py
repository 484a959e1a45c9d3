"""What a trace event costs per hit, next to a bare kprobe, per ISA.

Calls ``fibonacci`` of the bundled kernel image (many hits on its entry) three ways in one
run: unprobed, with a kprobe whose pre-handler only counts, and with a trace event that
fetches three arguments (a register, a stack word and a dereference), and prints the time
per hit of the probe and of the event (best of three, unprobed time subtracted) and their
ratio: what recording and fetching add to a hit.

    python benchmarks/trace_cost.py [--arch A] [--n N]
"""

from __future__ import annotations

import argparse
import time

from kprobe_ref import ProbeBuilder, register_kprobe, unregister_kprobe
from kprobe_ref.arch import ARCHES
from kprobe_ref.sim import Machine
from kprobe_ref.tools.trace.session import TraceSession
from kprobe_ref.tools.verify import bundled_image

ARG0 = {"x86_64": "di", "aarch64": "x0", "riscv64": "a0", "loongarch64": "r4"}


def _time(f: object, repeat: int = 3) -> float:
    assert callable(f)
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t)
    return best


def measure(isa: str, n: int) -> tuple[int, float, float, float]:
    m = Machine(isa)
    fib = m.load_elf(bundled_image(isa)).symbols["fibonacci"]
    base = _time(lambda: m.call(fib, n))
    hits: list[int] = []
    h = register_kprobe(m.manager, m.points, ProbeBuilder().with_symbol_addr(fib)
                        .with_pre_handler(lambda _d, _r: hits.append(1)))
    probed = _time(lambda: m.call(fib, n))
    count = len(hits) // 3
    unregister_kprobe(m.manager, m.points, h)
    session = TraceSession(m)
    reg = ARG0[isa]
    session.define(f"p:f fibonacci n=%{reg} s=$stack0 d=+0($stack):u32")
    traced = _time(lambda: m.call(fib, n))
    return count, base, probed, traced


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default=None, choices=sorted(ARCHES))
    p.add_argument("--n", type=int, default=12, help="fibonacci argument (hits grow fast)")
    args = p.parse_args()
    print(f"{'ISA':<12} {'hits':>6} {'unprobed ms':>12} {'kprobe us/hit':>14} "
          f"{'event us/hit':>13} {'event/kprobe':>13}")
    for isa in [args.arch] if args.arch else sorted(ARCHES):
        count, base, probed, traced = measure(isa, args.n)
        per_probe = (probed - base) / count * 1e6
        per_event = (traced - base) / count * 1e6
        print(f"{isa:<12} {count:6d} {base * 1e3:12.1f} {per_probe:14.1f} {per_event:13.1f} "
              f"{per_event / per_probe:13.2f}")


if __name__ == "__main__":
    main()
