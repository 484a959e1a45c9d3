"""``kprobe-ref demo``: probes on the bundled sample programs, run side by side with the
unprobed programs.

The demo loads the bundled corpus image of an ISA, picks one instruction of each kind a
porter cares about (a branch, a call, a PC-relative data access, a plain instruction) by
decoding the sample functions, places kprobes there, runs the functions, and prints every
hit with its registers.  It adds a kretprobe on a recursive function (each level's return
value), then a uprobe and a uretprobe in a spawned process, and ends with the comparison of
every probed run with the unprobed one.  Nothing here is hard-coded to an address.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from kprobe_ref.arch import Decoded, Verdict
from kprobe_ref.kretprobe import register_kretprobe, unregister_kretprobe
from kprobe_ref.manager import register_kprobe, unregister_kprobe
from kprobe_ref.probe import KretprobeBuilder, ProbeBuilder
from kprobe_ref.ptregs import PtRegs
from kprobe_ref.tools.verify import (
    Case,
    FunctionSpec,
    Outcome,
    Runner,
    bundled_image,
    bundled_specs,
)
from kprobe_ref.uprobe import (
    register_uprobe,
    register_uretprobe,
    unregister_uprobe,
    unregister_uretprobe,
)

__all__ = ["KINDS", "run_demo"]

KINDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "branch": (("branch-indirect", "branch-relative"), ("dense_switch", "traffic_fsm", "gcd")),
    "call": (("call-indirect", "call-relative"), ("call_op", "fold_ops", "ackermann_small")),
    "pc-relative data": (
        ("rip-relative-operand", "pc-relative-address", "pc-relative-load"),
        ("counter_bump", "weighted_sum", "prime_at", "rv_auipc_data"),
    ),
    "plain": (("no-pc-use",), ("popcount_manual", "parity64")),
}
"""Kind of probe -> (reason codes that make an instruction of that kind, functions to look
in, in order of preference)."""

MAX_PRINTED_HITS = 3


@dataclass
class Tally:
    """Calls compared between probed and unprobed runs."""

    same: int = 0
    differ: list[str] = field(default_factory=list)

    def compare(self, what: str, want: Outcome | int, got: Outcome | int) -> None:
        if want == got:
            self.same += 1
        else:
            self.differ.append(f"{what}: probed {got!r}, unprobed {want!r}")


def _regs_line(regs: PtRegs) -> str:
    names = (regs.PC, regs.SP, *regs.ARGS[:3], regs.RET[0])
    return " ".join(f"{n}={regs.get(n):#x}" for n in dict.fromkeys(names))


def _find_site(
    r: Runner, reasons: tuple[str, ...], funcs: tuple[str, ...]
) -> tuple[str, Decoded] | None:
    for name in funcs:
        if name not in r.image.functions:
            continue
        for addr in r.instructions(name):
            d = r.m.arch.decode(r.m.read(addr, r.m.arch.max_insn_len), addr, False)
            if d.verdict is not Verdict.REJECT and d.reason in reasons:
                return name, d
    return None


def _printer(out: TextIO, label: str) -> Callable[[object, PtRegs], None]:
    seen = [0]

    def pre(_data: object, regs: PtRegs) -> None:
        seen[0] += 1
        if seen[0] <= MAX_PRINTED_HITS:
            out.write(f"    hit {seen[0]} at {label}: {_regs_line(regs)}\n")
        elif seen[0] == MAX_PRINTED_HITS + 1:
            out.write(f"    ... (further hits at {label} counted, not printed)\n")

    return pre


def _kprobes(r: Runner, specs: dict[str, FunctionSpec], out: TextIO, tally: Tally) -> None:
    sites = []
    for kind, (reasons, funcs) in KINDS.items():
        found = _find_site(r, reasons, funcs)
        if found is None:
            out.write(f"  (no {kind} instruction found in {', '.join(funcs)})\n")
            continue
        sites.append((kind, *found))
    baseline = {name: [r.run(name, c) for c in specs[name].cases] for _, name, _ in sites}
    handles = []
    for kind, name, d in sites:
        off = d.address - r.image.functions[name]
        label = f"{name}+{off:#x}"
        out.write(f"  kprobe on a {kind}: {label}  {d.text}  [{d.verdict.value}: {d.reason}]\n")
        b = ProbeBuilder().with_symbol_addr(r.image.functions[name]).with_offset(off)
        handles.append(register_kprobe(r.m.manager, r.m.points,
                                       b.with_pre_handler(_printer(out, label))))
    for name in baseline:
        out.write(f"  running {name} on {len(specs[name].cases)} inputs\n")
        for i, case in enumerate(specs[name].cases):
            got = r.run(name, case)
            out.write(f"    {name}{_args(case)} = {_ret(got)}\n")
            tally.compare(f"{name} case {i}", baseline[name][i], got)
    for h in handles:
        out.write(f"  {h.address:#x}: {h.nhit} hits, {h.nmissed} missed\n")
        unregister_kprobe(r.m.manager, r.m.points, h)


def _args(case: Case) -> str:
    return "(" + ", ".join(str(a) if isinstance(a, int) else f"<{len(a.data)} bytes>"
                           for a in case.args) + ")"


def _ret(o: Outcome) -> str:
    return o.error if o.ret is None and o.error else f"{o.ret}"


def _kretprobe(r: Runner, out: TextIO, tally: Tally, func: str = "fibonacci", n: int = 5) -> None:
    addr = r.image.functions[func]
    want = r.run(func, Case((n,)))
    depth = [0]

    def entry(data: dict[str, int], regs: PtRegs) -> None:
        data["n"], data["depth"] = regs.arg(0), depth[0]
        depth[0] += 1

    def ret(data: dict[str, int], regs: PtRegs) -> None:
        depth[0] -= 1
        indent = "  " * data["depth"]
        out.write(f"    {indent}level {data['depth']}: {func}({data['n']}) returned "
                  f"{regs.first_ret_value()}\n")

    rp = register_kretprobe(r.m.manager, r.m.points, KretprobeBuilder().with_symbol_addr(addr)
                            .with_entry_handler(entry).with_ret_handler(ret).with_data({})
                            .with_maxactive(20))
    out.write(f"  kretprobe on {func} (recursive), called with {n}:\n")
    got = r.run(func, Case((n,)))
    unregister_kretprobe(r.m.manager, r.m.points, rp)
    out.write(f"  {func}({n}) = {_ret(got)}, {rp.nmissed} missed\n")
    tally.compare(f"{func}({n}) under a kretprobe", want, got)


def _user(isa: str, out: TextIO, tally: Tally) -> None:
    from kprobe_ref.sim import Machine

    m = Machine(isa)
    pid = m.spawn(bundled_image(isa, "user"))
    proc = m.process(pid)
    funcs = proc.image.functions
    want = [m.call_user(pid, funcs["gcd"], 48, 18), m.call_user(pid, funcs["fibonacci"], 7)]
    up = register_uprobe(proc.manager, proc.points, ProbeBuilder().with_symbol_addr(funcs["gcd"])
                         .with_user_mode(pid).with_pre_handler(_printer(out, "gcd (user)")))

    def ret(_data: object, regs: PtRegs) -> None:
        out.write(f"    fibonacci returned {regs.first_ret_value()} in process {pid}\n")

    urp = register_uretprobe(proc.manager, proc.points, KretprobeBuilder()
                             .with_symbol_addr(funcs["fibonacci"]).with_user_mode(pid)
                             .with_ret_handler(ret).with_maxactive(2))
    out.write(f"  process {pid} ({proc.image.path}): uprobe on gcd, uretprobe on fibonacci\n")
    got = [m.call_user(pid, funcs["gcd"], 48, 18), m.call_user(pid, funcs["fibonacci"], 7)]
    out.write(f"    gcd(48, 18) = {got[0]}; fibonacci(7) = {got[1]} "
              f"({urp.nmissed} deeper calls missed: the pool holds 2)\n")
    unregister_uprobe(proc.manager, proc.points, up)
    unregister_uretprobe(proc.manager, proc.points, urp)
    tally.compare("user gcd", want[0], got[0])
    tally.compare("user fibonacci", want[1], got[1])


def run_demo(out: TextIO, isa: str = "x86_64") -> int:
    """Run the demo on ``isa``, writing to ``out``; returns the exit status (0: probed and
    unprobed runs agree)."""
    image = bundled_image(isa)
    out.write(f"kprobe-ref demo on {isa}: {image}\n")
    r = Runner(isa, image)
    specs = bundled_specs(isa)
    tally = Tally()
    out.write("kprobes\n")
    _kprobes(r, specs, out, tally)
    out.write("kretprobe\n")
    _kretprobe(r, out, tally)
    out.write("uprobe and uretprobe\n")
    _user(isa, out, tally)
    out.write(f"traps delivered: {r.m.trap_count} (kernel)\n")
    for line in tally.differ:
        out.write(f"DIFFERENT {line}\n")
    total = tally.same + len(tally.differ)
    verdict = "the same results" if not tally.differ else "DIFFERENT results"
    out.write(f"probed and unprobed runs gave {verdict}: {tally.same} of {total} calls "
              "identical in return value and memory\n")
    return 0 if not tally.differ else 1
