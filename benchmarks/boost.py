"""Traps per pre-handler hit with boosted slots, per ISA, over the bundled corpus.

Every instruction of every bundled kernel-image function that has inputs is probed in turn
with a pre-handler-only kprobe (the boosted case), and again with a post handler too (which
needs the second trap, so never boosts); the function runs on all its inputs each time.
Printed per ISA: probed sites that were hit, total hits, traps per hit both ways, the share
of stepped sites that have a boosted variant, and Linux's figure for a pre-handler-only
kprobe on a stepped instruction (x86: 1 on kernels without CONFIG_PREEMPTION, 0 with
optprobes, 2 with CONFIG_PREEMPTION; the other ISAs always end the slot with a break: 2).

With ``--kernels DIR`` (``DIR/vmlinux-<isa>``, see ``benchmarks/kernel_audit.py --fetch``)
it also loads each real kernel at its link address and registers a pre-handler-only kprobe
on every instruction of a seeded sample of its functions (``--sample``), one at a time,
and prints the share of stepped instructions whose slot got a boosted variant: the
machine's allocator places each slot at the free place nearest the code, which in a
kernel of tens of MiB lies beyond the image, so on riscv64 (``jal`` reaches +-1 MiB) only
functions near the image's ends can boost.

    python benchmarks/boost.py [--arch A] [--functions N] [--kernels DIR] [--sample 300]
"""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass
from pathlib import Path

from kprobe_ref import ProbeBuilder, register_kprobe, unregister_kprobe
from kprobe_ref.arch import ARCHES, Verdict, instruction_starts
from kprobe_ref.errors import KprobeError
from kprobe_ref.sim import Machine
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


def kernel_share(path: Path, isa: str, sample: int) -> tuple[int, int, int, int]:
    """Probed instructions, stepped ones, boosted ones, and functions sampled, over a
    seeded sample of the kernel's functions."""
    m = Machine(isa)
    image = m.load_elf(path)
    funcs = [f for f in image.function_symbols if f[1] > 0]
    picked = random.Random(f"boost-{isa}").sample(funcs, min(sample, len(funcs)))
    probed = stepped = boosted = 0
    for start, size, _name in picked:
        for addr in instruction_starts_of(m, isa, start, size):
            b = ProbeBuilder().with_symbol_addr(addr).with_pre_handler(lambda _d, _r: None)
            try:
                h = register_kprobe(m.manager, m.points, b)
            except KprobeError:
                continue
            probed += 1
            point = h.point
            assert point is not None
            if point.decoded.verdict is Verdict.STEP_OUT_OF_LINE:
                stepped += 1
                boosted += point.boost_plan is not None
            unregister_kprobe(m.manager, m.points, h)
    return probed, stepped, boosted, len(picked)


def instruction_starts_of(m: Machine, isa: str, start: int, size: int) -> list[int]:
    """The instruction starts of the function at ``start`` as the machine's memory holds it."""
    starts, _ = instruction_starts(isa, start, m.read(start, size))
    return list(starts)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", action="append", choices=sorted(ARCHES))
    p.add_argument("--functions", type=int, default=None, help="only the first N functions")
    p.add_argument("--kernels", type=Path, help="directory holding vmlinux-<isa> images")
    p.add_argument("--sample", type=int, default=300, help="kernel functions per ISA")
    args = p.parse_args()
    print(f"{'isa':12} {'sites hit':>9} {'hits':>8} {'traps/hit pre-only':>19} "
          f"{'traps/hit with post':>20} {'stepped boostable':>18}   Linux pre-only stepped")
    for isa in args.arch or ["x86_64", "aarch64", "riscv64", "loongarch64"]:
        b, t = measure(isa, args.functions)
        share = f"{b.boostable}/{b.stepped}"
        print(f"{isa:12} {b.sites:9} {b.hits:8} {b.traps / max(b.hits, 1):19.3f} "
              f"{t.traps / max(t.hits, 1):20.3f} {share:>18}   {LINUX[isa]}")
    if args.kernels is None:
        return
    print(f"\n{'kernel':12} {'functions':>9} {'probed':>8} {'stepped':>8} {'boosted':>8} "
          f"{'share':>6}   Linux boosts")
    for isa in args.arch or ["x86_64", "aarch64", "riscv64"]:
        path = args.kernels / f"vmlinux-{isa}"
        if not path.exists():
            print(f"{isa:12} (no {path})")
            continue
        n, st, bo, f = kernel_share(path, isa, args.sample)
        linux = "x86 without PREEMPTION (Debian's are PREEMPT_DYNAMIC: none)" \
            if isa == "x86_64" else "never"
        print(f"{isa:12} {f:9} {n:8} {st:8} {bo:8} {bo / max(st, 1):6.1%}   {linux}")


if __name__ == "__main__":
    main()
