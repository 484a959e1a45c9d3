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

    python benchmarks/trap_cost.py [--arch x86_64] [--calls 3000]
"""

from __future__ import annotations

import argparse
import time

from kprobe_ref import ProbeBuilder, register_kprobe
from kprobe_ref.arch import ARCHES
from kprobe_ref.sim import Machine
from kprobe_ref.sim.cpu import Stop
from kprobe_ref.sim.space import AddressSpace

CODE = 0x40_0000
SNIPPETS: dict[str, dict[str, str]] = {
    "x86_64": {"nop": "90", "branch": "eb00", "ret": "c3"},
    "aarch64": {"nop": "29010091", "branch": "01000014", "ret": "c0035fd6"},
    "riscv64": {"nop": "13000000", "branch": "6f004000", "ret": "67800000"},
    "loongarch64": {"nop": "8c010002", "branch": "00040050", "ret": "2000004c"},
}


class BareMachine(Machine):
    """A machine whose breakpoint path resumes after the breakpoint, doing nothing else."""

    def _deliver_break(self, space: AddressSpace, stop: Stop) -> int:
        regs = self._read_regs(space)
        regs.pc = stop.pc + len(self.arch.step_breakpoint(False))
        self.trap_count += 1
        self._write_regs(space, regs)
        return regs.pc


def _timed(m: Machine, addr: int, calls: int) -> float:
    t = time.perf_counter()
    for _ in range(calls):
        m.call(addr)
    return (time.perf_counter() - t) / calls * 1e6


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


if __name__ == "__main__":
    main()
