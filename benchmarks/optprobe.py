"""Jump-optimized kprobes (x86_64, riscv64): how much can be optimized, traps per hit, cost.

Printed, all measured in this run, for x86_64 and riscv64:

1. The bundled corpus: every instruction of every function is probed in turn with a
   pre-handler-only kprobe and the optimizer is run; the share of instructions (and of
   probeable ones) whose probe was optimized, and the refusal reasons of the rest.
2. Traps per pre-handler hit over the corpus functions that have inputs, with
   optimization on (0 at optimized sites) and off (boosted slots: 1, or 2 where the
   instruction cannot be boosted), over the same sites and runs.
3. The cost of one hit, optimized and as a breakpoint, on the same loop in the same run:
   ``(time probed - time unprobed) / hits`` for each, and their ratio.
4. A real kernel, if ``/work/kernels/vmlinux-x86_64`` (or ``--kernel PATH``) exists: over a
   deterministic sample of its functions, the share of instruction starts that Linux's
   rules let one kprobe (``check_probe``) and of those the share the optimizer would
   optimize (region rules, exception table, a detour within reach); static, nothing runs.

    PYTHONPATH=$PWD python benchmarks/optprobe.py [--kernel PATH] [--kernel-functions N]
"""

from __future__ import annotations

import argparse
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from kprobe_ref import ProbeBuilder, optimize_kprobes, register_kprobe, unregister_kprobe
from kprobe_ref.errors import KprobeError
from kprobe_ref.kernel.blacklist import Kallsyms, build_blacklist
from kprobe_ref.kernel.elfscan import KernelElf
from kprobe_ref.manager import ProbeManager, check_probe
from kprobe_ref.optimize import optimize_refusal, plan_region
from kprobe_ref.point import ProbePointList
from kprobe_ref.sim import Machine
from kprobe_ref.tools.kernel_audit.host import ImageHost
from kprobe_ref.tools.kernel_audit.whole import kernel_functions
from kprobe_ref.tools.verify import Runner, bundled_image, bundled_specs

KERNEL = Path("/work/kernels/vmlinux-x86_64")
ISAS = ("x86_64", "riscv64")
LOOPS: dict[str, tuple[bytes, int]] = {
    "x86_64": (bytes.fromhex("4889f8" "4883c001" "4883c002" "48ffcf" "75f2" "c3"), 3),
    "riscv64": (bytes.fromhex("13051500" "13052500" "9385f5ff" "e39a05fe" "67800000"), 0),
}
"""A loop whose head holds the probe, and the head's offset: x86_64 ``mov rax, rdi;
l: add rax, 1; add rax, 2; dec rdi; jnz l; ret`` (returns 4n), riscv64 ``l: addi a0, a0, 1;
addi a0, a0, 2; addi a1, a1, -1; bnez a1, l; ret`` (a0 = 0: returns 3n).  A branch target
at the region's start is allowed."""
LOOP_AT = 0x40_0000


def _pre(addr: int) -> ProbeBuilder:
    return ProbeBuilder().with_symbol_addr(addr).with_pre_handler(lambda _d, _r: None)


# -- 1. the corpus ---------------------------------------------------------------------------


def corpus_fraction(isa: str) -> None:
    r = Runner(isa, bundled_image(isa))
    m, reasons = r.m, Counter[str]()
    total = probeable = optimized = 0
    for name in sorted(r.image.functions):
        for addr in r.instructions(name):
            total += 1
            try:
                h = register_kprobe(m.manager, m.points, _pre(addr))
            except KprobeError:
                continue
            probeable += 1
            optimize_kprobes(m.manager)
            if h.optimized:
                optimized += 1
            else:
                assert h.point is not None
                reasons[optimize_refusal(m.manager, h.point) or "?"] += 1
            unregister_kprobe(m.manager, m.points, h)
    print(f"bundled {isa} corpus: {total} instructions, {probeable} probeable, "
          f"{optimized} optimized = {optimized / total:.1%} of all, "
          f"{optimized / max(probeable, 1):.1%} of probeable")
    for why, n in reasons.most_common():
        print(f"    {n:6}  {why}")


# -- 2. traps per hit ------------------------------------------------------------------------


@dataclass
class Tally:
    hits: int = 0
    traps: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    hits_by_kind: Counter[str] = field(default_factory=Counter)


def traps_per_hit(isa: str, optimization: bool) -> Tally:
    r = Runner(isa, bundled_image(isa))
    m, t = r.m, Tally()
    m.manager.optimization = optimization
    for name, spec in sorted(bundled_specs(isa).items()):
        if not spec.callable or not spec.cases or name not in r.image.functions:
            continue
        for addr in r.instructions(name):
            try:
                h = register_kprobe(m.manager, m.points, _pre(addr))
            except KprobeError:
                continue
            kind = "optimized" if h.optimized else "breakpoint"
            before = m.trap_count
            for case in spec.cases:
                r.run(name, case)
            t.traps += m.trap_count - before
            t.hits += h.nhit
            t.by_kind[kind] += m.trap_count - before
            t.hits_by_kind[kind] += h.nhit
            unregister_kprobe(m.manager, m.points, h)
    return t


def _per(traps: int, hits: int) -> str:
    return f"{traps / hits:.3f}" if hits else "-"


def traps_section(isa: str) -> None:
    on, off = traps_per_hit(isa, True), traps_per_hit(isa, False)
    print(f"{isa}: traps per pre-handler hit over the corpus runs ({on.hits} hits): "
          "optimization on "
          f"{_per(on.traps, on.hits)}, off (boosted slots) {_per(off.traps, off.hits)}")
    for kind in ("optimized", "breakpoint"):
        print(f"    with optimization on, {kind:10} sites: {on.hits_by_kind[kind]:8} hits, "
              f"{_per(on.by_kind[kind], on.hits_by_kind[kind])} traps/hit")


# -- 3. hit cost -----------------------------------------------------------------------------


def _loop_machine(isa: str) -> Machine:
    m = Machine(isa)
    code = LOOPS[isa][0]
    m.map(LOOP_AT, 0x1000, "rx")
    m.write(LOOP_AT, code)
    m.add_symbol("loop", LOOP_AT, len(code))
    return m


def _timed(m: Machine, n: int) -> float:
    t = time.perf_counter()
    if m.isa == "x86_64":
        assert m.call(LOOP_AT, n) == 4 * n
    else:
        assert m.call(LOOP_AT, 0, n) == 3 * n
    return time.perf_counter() - t


KINDS = ("unprobed", "optimized", "breakpoint, boosted", "breakpoint, two traps")


def _probed(isa: str, kind: str) -> Machine:
    """A machine running the loop with the probe of ``kind`` at its head."""
    m = _loop_machine(isa)
    if kind == "unprobed":
        return m
    b = _pre(LOOP_AT + LOOPS[isa][1])
    if kind.endswith("two traps"):
        b = b.with_post_handler(lambda _d, _r: None)
    h = register_kprobe(m.manager, m.points, b)
    if kind == "optimized":
        optimize_kprobes(m.manager)
        assert h.optimized
    return m


def hit_cost(isa: str, n: int = 2000, rounds: int = 9) -> None:
    """One machine per kind, timed in turn round after round (so load on the host hits
    every kind alike); the fastest round of each counts."""
    machines = {kind: _probed(isa, kind) for kind in KINDS}
    best = dict.fromkeys(KINDS, float("inf"))
    traps = {kind: m.trap_count for kind, m in machines.items()}
    for _ in range(rounds):
        for kind, m in machines.items():
            best[kind] = min(best[kind], _timed(m, n))
    plain = best["unprobed"]
    costs = {kind: (best[kind] - plain) / n for kind in KINDS[1:]}
    for kind in KINDS[1:]:
        per_hit = (machines[kind].trap_count - traps[kind]) / rounds / n
        print(f"    {kind:24} {costs[kind] * 1e6:8.2f} us/hit  ({per_hit:.0f} traps/hit)")
    opt = costs["optimized"]
    print(f"{isa}: hit cost, optimized / breakpoint: {opt / costs['breakpoint, boosted']:.2f} "
          f"(boosted slot), {opt / costs['breakpoint, two traps']:.2f} (two traps); "
          f"unprobed loop {plain / n * 1e6:.2f} us/iteration")


# -- 4. a real kernel ------------------------------------------------------------------------


def kernel_fraction(path: Path, sample: int) -> None:
    if not path.exists():
        print(f"real kernel: {path} missing, skipped")
        return
    t = time.perf_counter()
    kelf = KernelElf(path)
    symbols = kelf.symbols()
    funcs = kernel_functions(kelf, symbols, Kallsyms(symbols))
    host = ImageHost(kelf, [(f.address, f.size) for f in funcs], build_blacklist(kelf, symbols))
    m, points = ProbeManager("x86_64", host), ProbePointList()
    picked = random.Random("optprobe").sample(funcs, min(sample, len(funcs)))
    total = probeable = optimized = 0
    reasons = Counter[str]()
    for f in picked:
        code = kelf.read(f.address, f.size)
        off = 0
        while off < len(code):
            n = m.arch.insn_length(code[off:], f.address + off)
            if n == 0:
                break
            addr, off, total = f.address + off, off + n, total + 1
            try:
                check_probe(m, points, addr)
            except KprobeError:
                continue
            probeable += 1
            why = _static_refusal(m, addr)
            if why is None:
                optimized += 1
            else:
                reasons[why] += 1
    kelf.close()
    print(f"real kernel {path}: {len(picked)} of {len(funcs)} functions sampled, "
          f"{total} instructions, {probeable} probeable, {optimized} optimizable = "
          f"{optimized / max(total, 1):.1%} of all, {optimized / max(probeable, 1):.1%} of "
          f"probeable ({time.perf_counter() - t:.0f} s)")
    for why, n in reasons.most_common(8):
        print(f"    {n:8}  {why}")


def _static_refusal(m: ProbeManager, addr: int) -> str | None:
    """Why a pre-handler-only probe at ``addr`` would not be optimized, with its detour a
    page away (the allocator places detours near the code)."""
    region = plan_region(m, addr)
    if isinstance(region, str):
        return region
    built = m.arch.build_detour(region, addr, addr + 0x10_0000)
    return built if isinstance(built, str) else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kernel", type=Path, default=KERNEL)
    p.add_argument("--kernel-functions", type=int, default=1500)
    args = p.parse_args()
    for isa in ISAS:
        corpus_fraction(isa)
    for isa in ISAS:
        traps_section(isa)
    for isa in ISAS:
        hit_cost(isa)
    kernel_fraction(args.kernel, args.kernel_functions)


if __name__ == "__main__":
    main()
