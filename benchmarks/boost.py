"""Traps per pre-handler hit with boosted slots, per ISA, over the bundled corpus.

Every instruction of every bundled kernel-image function that has inputs is probed in turn
with a pre-handler-only kprobe (the boosted case), and again with a post handler too (which
needs the second trap, so never boosts); the function runs on all its inputs each time.
Printed per ISA: probed sites that were hit, total hits, traps per hit both ways, the share
of stepped sites that have a boosted variant, and Linux's figure for a pre-handler-only
kprobe on a stepped instruction (x86: 1 on kernels without CONFIG_PREEMPTION, 0 with
optprobes, 2 with CONFIG_PREEMPTION; the other ISAs always end the slot with a break: 2).

    python benchmarks/boost.py [--arch A] [--functions N]
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from kprobe_ref import ProbeBuilder, register_kprobe, unregister_kprobe
from kprobe_ref.arch import ARCHES, Verdict
from kprobe_ref.errors import KprobeError
from kprobe_ref.tools.verify import Case, Runner, bundled_image, bundled_specs

LINUX = {"x86_64": "1 (no PREEMPTION), 0 optprobe", "aarch64": "2", "riscv64": "2",
         "loongarch64": "2"}


@dataclass
class Tally:
    sites: int = 0
    hits: int = 0
    traps: int = 0
    stepped: int = 0
    boostable: int = 0


def _probe_all(r: Runner, name: str, cases: tuple[Case, ...], post: bool,
               t: Tally) -> None:
    for addr in r.instructions(name):
        b = ProbeBuilder().with_symbol_addr(addr).with_pre_handler(lambda _d, _r: None)
        if post:
            b = b.with_post_handler(lambda _d, _r: None)
        try:
            h = register_kprobe(r.m.manager, r.m.points, b)
        except KprobeError:
            continue
        point = h.point
        assert point is not None
        if not post and point.decoded.verdict is Verdict.STEP_OUT_OF_LINE:
            t.stepped += 1
            t.boostable += point.boost_plan is not None
        traps = r.m.trap_count
        for case in cases:
            r.run(name, case)
        t.traps += r.m.trap_count - traps
        t.hits += h.nhit
        t.sites += h.nhit > 0
        unregister_kprobe(r.m.manager, r.m.points, h)


def measure(isa: str, limit: int | None) -> tuple[Tally, Tally]:
    r = Runner(isa, bundled_image(isa))
    specs = [(n, s) for n, s in sorted(bundled_specs(isa).items()) if n in r.image.functions]
    boosted, two = Tally(), Tally()
    for name, spec in specs[:limit]:
        if not spec.callable or not spec.cases:
            continue
        cases = spec.cases
        _probe_all(r, name, cases, False, boosted)
        _probe_all(r, name, cases, True, two)
    return boosted, two


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", action="append", choices=sorted(ARCHES))
    p.add_argument("--functions", type=int, default=None, help="only the first N functions")
    args = p.parse_args()
    print(f"{'isa':12} {'sites hit':>9} {'hits':>8} {'traps/hit pre-only':>19} "
          f"{'traps/hit with post':>20} {'stepped boostable':>18}   Linux pre-only stepped")
    for isa in args.arch or ["x86_64", "aarch64", "riscv64", "loongarch64"]:
        b, t = measure(isa, args.functions)
        share = f"{b.boostable}/{b.stepped}"
        print(f"{isa:12} {b.sites:9} {b.hits:8} {b.traps / max(b.hits, 1):19.3f} "
              f"{t.traps / max(t.hits, 1):20.3f} {share:>18}   {LINUX[isa]}")


if __name__ == "__main__":
    main()
