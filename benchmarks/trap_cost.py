"""Traps per probe hit and host time per hit, against a bare trap round trip.

For each ISA, three two-instruction functions are called many times on one machine:

- ``plain``: an ALU instruction with no effect on the result (``add x9, x9, #0`` and the
  like), then a return (the baseline call cost);
- ``bare``: a breakpoint the machine's trap path skips without any probe logic (the cost of
  the CPU stopping, the frame moving to the host and back);
- the ``plain`` function with a kprobe on its no-op (stepped out of line: two traps), and a
  function whose first instruction is a branch to the next one, probed (simulated: one trap).

Printed per ISA: microseconds per call, per trap and per hit above the baseline, traps per
hit, and each hit's cost as a multiple of the bare round trip, all measured in the same run.
A second table sets the machine's bare trap round trip beside the CPU's own (the machine's
and unicorn's rounds interleaved, best of each): unicorn with
an empty interrupt hook that stops emulation and a new ``emu_start`` after the breakpoint
(riscv: ``emu_start`` ends on ``ebreak`` by itself), and the P-code interpreter's
``run`` returning at the breakpoint and called again after it, each measured as the
difference from the same code with a plain instruction in place of the breakpoint.

    python benchmarks/trap_cost.py [--arch x86_64] [--calls 3000]
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable

import unicorn

from kprobe_ref import ProbeBuilder, register_kprobe
from kprobe_ref.arch import ARCHES
from kprobe_ref.ptregs import PtRegs
from kprobe_ref.sim import Machine
from kprobe_ref.sim.space import AddressSpace

CODE = 0x40_0000
SNIPPETS: dict[str, dict[str, str]] = {
    "x86_64": {"nop": "90", "branch": "eb00", "ret": "c3"},
    "aarch64": {"nop": "29010091", "branch": "01000014", "ret": "c0035fd6"},
    "riscv64": {"nop": "13000000", "branch": "6f004000", "ret": "67800000"},
    "loongarch64": {"nop": "8c010002", "branch": "00040050", "ret": "2000004c"},
}


class BareMachine(Machine):
    """A machine whose trap path resumes after the breakpoint without calling the probe
    engine: the cost of the CPU stopping, the frame moving to the host and back."""

    def __init__(self, isa: str) -> None:
        super().__init__(isa)
        self._skip = len(self.arch.step_breakpoint(False))

    def _dispatch_break(self, space: AddressSpace, regs: PtRegs) -> bool:
        regs.pc = self.arch.trap_address(regs) + self._skip
        return True


ROUNDS = 7
"""Each figure is the fastest of this many rounds (the machine is shared; the minimum is
the least disturbed)."""


def _best(fn: Callable[[], None], calls: int) -> float:
    """Microseconds per call of ``fn``: the fastest of :data:`ROUNDS` rounds."""
    return _best_of_each([fn], calls)[0]


def _best_of_each(fns: list[Callable[[], None]], calls: int) -> list[float]:
    """Microseconds per call of each of ``fns``: the fastest of :data:`ROUNDS` rounds, the
    rounds of all of them interleaved, so that a change in the host's load during the
    measurement affects each alike."""
    per = max(calls // ROUNDS, 1)
    best = [float("inf")] * len(fns)
    for _ in range(ROUNDS):
        for i, fn in enumerate(fns):
            t = time.perf_counter()
            for _ in range(per):
                fn()
            best[i] = min(best[i], (time.perf_counter() - t) / per * 1e6)
    return best


def _timed(m: Machine, addr: int, calls: int) -> float:
    return _best(lambda: m.call(addr) and None, calls)


def bare_pair(isa: str) -> tuple[Callable[[], None], Callable[[], None]]:
    """The machine's plain call and its call through a bare trap (difference: one trap)."""
    s = {k: bytes.fromhex(v) for k, v in SNIPPETS[isa].items()}
    m = BareMachine(isa)
    m.map(CODE, 0x1000, "rx")
    m.write(CODE, s["nop"] + s["ret"])
    m.write(CODE + 0x100, m.arch.step_breakpoint(False) + s["ret"])
    return (lambda: m.call(CODE) and None), (lambda: m.call(CODE + 0x100) and None)


def measure(isa: str, calls: int) -> dict[str, float]:
    s = {k: bytes.fromhex(v) for k, v in SNIPPETS[isa].items()}
    m = BareMachine(isa)
    m.map(CODE, 0x1000, "rx")
    plain, bare, branch = CODE, CODE + 0x100, CODE + 0x200
    m.write(plain, s["nop"] + s["ret"])
    m.write(bare, m.arch.step_breakpoint(False) + s["ret"])
    m.write(branch, s["branch"] + s["ret"])
    base = _timed(m, plain, calls)
    t0 = m.trap_count
    bare_us = _timed(m, bare, calls) - base
    bare_traps = (m.trap_count - t0) / calls
    out = {"call": base, "bare": bare_us / bare_traps}
    probed = Machine(isa)
    probed.map(CODE, 0x1000, "rx")
    probed.write(plain, s["nop"] + s["ret"])
    probed.write(branch, s["branch"] + s["ret"])
    probed.add_symbol("plain", plain, len(s["nop"] + s["ret"]))
    probed.add_symbol("branch", branch, len(s["branch"] + s["ret"]))
    for name, addr in (("stepped", plain), ("simulated", branch)):
        h = register_kprobe(probed.manager, probed.points, ProbeBuilder().with_symbol_addr(addr))
        t0 = probed.trap_count
        out[name] = _timed(probed, addr, calls) - base
        out[f"{name}_traps"] = (probed.trap_count - t0) / h.nhit
        assert h.point is not None
        out[f"{name}_verdict"] = h.point.decoded.verdict.value  # type: ignore[assignment]
    return out


_UC: dict[str, tuple[int, int]] = {
    "x86_64": (unicorn.UC_ARCH_X86, unicorn.UC_MODE_64),
    "aarch64": (unicorn.UC_ARCH_ARM64, unicorn.UC_MODE_ARM),
    "riscv64": (unicorn.UC_ARCH_RISCV, unicorn.UC_MODE_RISCV64),
}


def _hook_stop(uc: unicorn.Uc, _intno: int, _data: object) -> None:
    uc.emu_stop()


def unicorn_pair(isa: str) -> tuple[Callable[[], None], Callable[[], None]]:
    """unicorn alone: two plain instructions, and a breakpoint whose empty hook stops the
    CPU followed by a new ``emu_start`` after it (difference: one stop and resume)."""
    s = {k: bytes.fromhex(v) for k, v in SNIPPETS[isa].items()}
    bp = Machine(isa).arch.step_breakpoint(False)
    uc = unicorn.Uc(*_UC[isa])
    uc.mem_map(CODE, 0x1000)
    plain, bare = CODE, CODE + 0x100
    uc.mem_write(plain, s["nop"] * 2)
    uc.mem_write(bare, bp + s["nop"])
    uc.hook_add(unicorn.UC_HOOK_INTR, _hook_stop)
    end = len(s["nop"]) * 2

    def resume_after_break() -> None:
        with contextlib.suppress(unicorn.UcError):  # riscv ebreak ends emu_start
            uc.emu_start(bare, bare + len(bp) + len(s["nop"]))
        uc.emu_start(bare + len(bp), bare + len(bp) + len(s["nop"]))

    return (lambda: uc.emu_start(plain, plain + end)), resume_after_break


def pcode_round_trip(isa: str, calls: int) -> float:
    """Microseconds the P-code CPU takes to stop at a breakpoint and resume after it."""
    from kprobe_ref.sim.pcode import PcodeCpu

    s = {k: bytes.fromhex(v) for k, v in SNIPPETS[isa].items()}
    bp = Machine(isa).arch.step_breakpoint(False)
    cpu = PcodeCpu(isa)
    cpu.map(CODE, 0x1000, "rx")
    plain, bare = CODE, CODE + 0x100
    cpu.mem_write(plain, s["nop"] * 2)
    cpu.mem_write(bare, bp + s["nop"])
    n = len(s["nop"])
    stop_plain, stop_bare = frozenset({plain + 2 * n}), frozenset({bare + len(bp) + n})

    def resume_after_break() -> None:
        cpu.run(bare, stop_bare, 10)
        cpu.run(bare + len(bp), stop_bare, 10)

    return _best(resume_after_break, calls) - _best(lambda: cpu.run(plain, stop_plain, 10)
                                                    and None, calls)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", action="append", choices=sorted(ARCHES))
    p.add_argument("--calls", type=int, default=3000)
    args = p.parse_args()
    isas = args.arch or [a for a in ("x86_64", "aarch64", "riscv64", "loongarch64") if a in ARCHES]
    print(f"{'isa':12} {'call us':>8} {'bare trap us':>13} {'stepped hit us':>15} {'traps':>6} "
          f"{'x bare':>7} {'simulated hit us':>17} {'traps':>6} {'x bare':>7}")
    for isa in isas:
        r = measure(isa, args.calls)
        print(f"{isa:12} {r['call']:8.1f} {r['bare']:13.1f} {r['stepped']:15.1f} "
              f"{r['stepped_traps']:6.1f} {r['stepped'] / r['bare']:7.2f} "
              f"{r['simulated']:17.1f} {r['simulated_traps']:6.1f} "
              f"{r['simulated'] / r['bare']:7.2f}")
    print()
    print(f"{'isa':12} {'machine cpu':>11} {'machine bare trap us':>21} "
          f"{'unicorn hook us':>16} {'x unicorn':>10} {'p-code us':>10} {'x p-code':>9}")
    for isa in isas:
        m = Machine(isa)
        fns = [*bare_pair(isa), *(unicorn_pair(isa) if isa in _UC else ())]
        times = _best_of_each(fns, args.calls)
        bare = times[1] - times[0]
        uc = times[3] - times[2] if isa in _UC else float("nan")
        pc = pcode_round_trip(isa, args.calls)
        print(f"{isa:12} {m.cpu_kind:>11} {bare:21.1f} {uc:16.1f} {bare / uc:10.2f} "
              f"{pc:10.1f} {bare / pc:9.2f}")


if __name__ == "__main__":
    main()
