"""Registration, unregistration and hit cost as probes accumulate, per ISA, in one run.

One generated image per ISA: functions of 64 stepped instructions each (register-to-register
arithmetic, which every ISA copies into an out-of-line slot) and a return, mapped in the
kernel, enough of them for ``--count`` probes and a batch more.  Probes are registered on
their instructions in order; at each checkpoint (10, 100, 1k, 10k, 100k probes already
registered) the script times the registration of the next ``--batch`` probes and their
unregistration, and the hit cost of a small separate function probed once (one call, one
hit), all measured side by side in the same run.

Printed per ISA and checkpoint: microseconds per register, per unregister and per hit, and
each as a ratio to the same figure on a reference machine that keeps 10 probes, measured in
alternation with it (best of ``--rounds``), so the ratio is the cost of the probes already
registered and not of the host's load (the goal is at most 1.2 for registration at 100k,
and an unchanged hit).

    PYTHONPATH=. python benchmarks/registration.py [--arch A]... [--count 100000] [--batch 200]
                                                   [--rounds 3]
"""

from __future__ import annotations

import argparse
import gc
import time
from dataclasses import dataclass

from kprobe_ref import ProbeBuilder, register_kprobe, unregister_kprobe
from kprobe_ref.arch import ARCHES
from kprobe_ref.probe import Kprobe
from kprobe_ref.sim.machine import Machine

BASE = 0x4000_0000
"""Where the generated function goes (kernel memory of the machine)."""

BODY: dict[str, tuple[bytes, bytes]] = {
    "x86_64": (bytes.fromhex("4801d8"), bytes.fromhex("c3")),  # add rax, rbx; ret
    "aarch64": (bytes.fromhex("00040091"), bytes.fromhex("c0035fd6")),
    # add x0, x0, #1; ret
    "riscv64": (bytes.fromhex("13051500"), bytes.fromhex("67800000")),  # addi a0,a0,1; ret
    "loongarch64": (bytes.fromhex("8404c002"), bytes.fromhex("2000004c")),
    # addi.d a0,a0,1; jirl zero,ra,0
}


FUNC = 64
"""Instructions per generated function (a kernel function's typical size)."""


def _machine(isa: str, n: int) -> tuple[Machine, list[int], int]:
    """A machine with at least ``n`` stepped instructions in functions of :data:`FUNC`
    instructions each, and a one-instruction function ``small`` after them; returns the
    machine, the stepped instruction addresses and the address of ``small``."""
    insn, ret = BODY[isa]
    m = Machine(isa)
    nfunc = -(-n // FUNC)
    fsize = FUNC * len(insn) + len(ret)
    fsize += -fsize % 16
    func = (insn * FUNC + ret).ljust(fsize, b"\0")
    m.map(BASE, (nfunc + 1) * fsize + 0x1000, "rx")
    m.write(BASE, func * nfunc)
    addrs: list[int] = []
    for f in range(nfunc):
        start = BASE + f * fsize
        m.add_symbol(f"f{f}", start, FUNC * len(insn) + len(ret))
        addrs += [start + i * len(insn) for i in range(FUNC)]
    small = BASE + nfunc * fsize
    m.write(small, insn + ret)
    m.add_symbol("small", small, len(insn) + len(ret))
    return m, addrs[:n], small


def _builder(addr: int) -> ProbeBuilder:
    return ProbeBuilder().with_symbol_addr(addr).with_pre_handler(lambda _d, _r: None)


def _register(m: Machine, addrs: list[int]) -> tuple[list[Kprobe], float]:
    t = time.perf_counter()
    hs = [register_kprobe(m.manager, m.points, _builder(a)) for a in addrs]
    return hs, time.perf_counter() - t


def _unregister(m: Machine, hs: list[Kprobe]) -> float:
    t = time.perf_counter()
    for h in hs:
        unregister_kprobe(m.manager, m.points, h)
    return time.perf_counter() - t


def _hit_cost(m: Machine, small: int, reps: int) -> float:
    h = register_kprobe(m.manager, m.points, _builder(small))
    m.call(small, 1)
    t = time.perf_counter()
    for _ in range(reps):
        m.call(small, 1)
    dt = (time.perf_counter() - t) / reps
    unregister_kprobe(m.manager, m.points, h)
    return dt


@dataclass
class Subject:
    """A machine under measurement: the reference one (10 probes registered for good) or
    the one whose probes accumulate."""

    m: Machine
    addrs: list[int]
    small: int
    registered: list[Kprobe]

    def grow(self, to: int) -> None:
        hs, _ = _register(self.m, self.addrs[len(self.registered):to])
        self.registered += hs

    def measure(self, batch: int, reps: int) -> tuple[float, float, float]:
        """Microseconds per register and per unregister of the next ``batch`` addresses,
        and per hit of the small function."""
        n = len(self.registered)
        hs, reg = _register(self.m, self.addrs[n:n + batch])
        unreg = _unregister(self.m, hs)
        return reg / batch * 1e6, unreg / batch * 1e6, _hit_cost(self.m, self.small, reps) * 1e6


def _subject(isa: str, n: int, registered: int) -> Subject:
    m, addrs, small = _machine(isa, n)
    s = Subject(m, addrs, small, [])
    s.grow(registered)
    return s


def run(isa: str, count: int, batch: int, reps: int, rounds: int) -> None:
    """Print the figures of one ISA.  Each checkpoint's batches alternate with batches on a
    reference machine that keeps 10 probes, ``rounds`` times, and the best of each is
    compared, so that a change in the host's load during the run does not pass for growth."""
    checkpoints = [c for c in (10, 100, 1000, 10_000, 100_000) if c <= count]
    ref = _subject(isa, 10 + batch, 10)
    big = _subject(isa, count + batch, 0)
    print(f"\n{isa}: {count + batch} stepped instructions in functions of {FUNC}; "
          f"batches of {batch}; best of {rounds} rounds against a machine with 10 probes")
    print(f"{'registered':>10} {'reg us':>8} {'x':>5} {'unreg us':>9} {'x':>5} "
          f"{'hit us':>8} {'x':>5}")
    started = time.perf_counter()
    for c in checkpoints:
        big.grow(c)
        gc.collect()
        mine, theirs = [], []
        for _ in range(rounds):
            theirs.append(ref.measure(batch, reps))
            mine.append(big.measure(batch, reps))
        fig = [min(f[i] for f in mine) for i in range(3)]
        base = [min(f[i] for f in theirs) for i in range(3)]
        print(f"{c:>10} {fig[0]:>8.1f} {fig[0] / base[0]:>5.2f} {fig[1]:>9.1f} "
              f"{fig[1] / base[1]:>5.2f} {fig[2]:>8.1f} {fig[2] / base[2]:>5.2f}")
    total = time.perf_counter() - started
    print(f"{'':>10} ({len(big.registered)} probes registered in all; {total:.1f} s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", action="append", choices=sorted(ARCHES))
    ap.add_argument("--count", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--reps", type=int, default=300, help="hits per hit-cost figure")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    for isa in a.arch or sorted(ARCHES):
        run(isa, a.count, a.batch, a.reps, a.rounds)


if __name__ == "__main__":
    main()
