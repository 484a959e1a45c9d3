"""Jump-optimized kprobes: the optimizer, the detour hit path and unoptimization.

Mirrors Linux ``kernel/kprobes.c`` (``kprobe_optimizer``, ``optimize_kprobe``,
``unoptimize_kprobe``, ``opt_pre_handler``) and ``arch/x86/kernel/kprobes/opt.c``
(``optimized_callback``, ``arch_optimize_kprobes``, ``arch_unoptimize_kprobe``); the
ISA's rules live in ``arch/<isa>/optimize.py``.  ``docs/optprobes.md`` is the long form.

A probe is always armed with its breakpoint first.  The optimizer (:func:`optimize_kprobes`,
Linux's delayed ``kprobe_optimizer`` work) then replaces the breakpoint of every eligible
point by a jump over a region of whole instructions to a *detour buffer*: a host-call site,
the region's instructions relocated, and a jump back to the first instruction after the
region.  A hit takes no trap: the host stops the CPU at the host-call site and calls
:func:`optimized_callback`, which runs the pre-handlers and sends the CPU on into the
relocated copy.

When it runs.  :func:`optimize_kprobes` runs the optimizer now.  With
``manager.optimization`` set (Linux's ``debug.kprobes_optimization`` sysctl; off by default
here so that a probe's trap count is what the boosted-slot rules say unless asked), it also
runs whenever a lifecycle operation (register, unregister, enable, disable, adding or
removing an event callback) has succeeded: that is the point where registration settles.
Its failures never fail that operation (Linux runs it later, from a workqueue): they are
logged and the points stay breakpoints.

Eligible: a kernel probe (uprobes are never optimized), armed, whose every probe has
neither a post handler nor an event callback (those need the second trap, as for boosting),
whose ISA accepts the region, with no other probe inside the region, and with no CPU inside
the region, stepping the point's slot, or running its handlers (:func:`optimize_refusal`).
A CPU found inside defers the point to a later run: the host calls
:func:`retry_deferred` at its quiescent points (Linux instead waits for
``synchronize_rcu_tasks()`` and meanwhile sends breakpoint hits to the detour, so no CPU
re-enters the region).

Unoptimization.  Before a probe at the same point gains a post handler or an event
callback, before a probe is registered inside an optimized region, and before the point's
breakpoint would leave memory (unregister, disable), the jump is replaced by the breakpoint
and the original bytes again (:func:`suspended`); a lifecycle operation that then fails puts
the same jump back, so it stays all or nothing.  The detour is freed after a grace period:
when no CPU is inside a probe handler and no CPU's PC, running or preempted, lies in it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from kprobe_ref import manager as _engine
from kprobe_ref.arch.base import OptPlan, OptRegion, Reach, SlotReach, Verdict
from kprobe_ref.errors import KprobeError, OutOfReach
from kprobe_ref.point import Optimized, ProbePoint, overlay_original
from kprobe_ref.probe import Kprobe
from kprobe_ref.ptregs import PtRegs

if TYPE_CHECKING:
    from kprobe_ref.manager import ProbeManager

__all__ = [
    "covering",
    "detour_fault",
    "optimize_kprobes",
    "optimize_refusal",
    "optimized_callback",
    "plan_region",
    "retry_deferred",
    "settle",
    "suspended",
    "unoptimize_kprobe",
]

LOG = logging.getLogger("kprobe_ref")
DETOUR_SIZE = 64
"""Bytes of executable memory a detour buffer takes (x86_64: at most 25; riscv64: 22)."""
DETOUR_REACH = (1 << 31) - (1 << 20)
"""How far from the probe a detour may lie: both ISAs' jumps reach +-2 GiB, less a margin
for the region and the detour's own extent."""


# -- eligibility --------------------------------------------------------------------------


def _original(m: ProbeManager, addr: int, size: int) -> bytes:
    """The code at ``addr`` as it was before any probe."""
    return overlay_original(m.break_list.values(), addr, m.aux.read_memory(addr, size, m.pid))


class _Memory:
    """Memory as the ISA's analysis reads it (:class:`~kprobe_ref.arch.base.Reader`)."""

    def __init__(self, m: ProbeManager) -> None:
        self.m = m

    def read(self, addr: int, size: int) -> bytes | None:
        try:
            return _original(self.m, addr, size)
        except KprobeError:
            return None

    def executable(self, addr: int) -> bool:
        return self.m.aux.is_executable(addr, 1, self.m.pid)


def _state_refusal(m: ProbeManager, point: ProbePoint) -> str | None:
    """Why the point's probes or state keep it a breakpoint (``None``: they do not)."""
    if m.pid is not None:
        return "uprobe"
    if point.retired or not point.armed or not point.wants_breakpoint():
        return "not-armed"
    if point.ftrace:
        return "ftrace-site"
    if point.decoded.verdict is not Verdict.STEP_OUT_OF_LINE:
        return "region-not-boostable"
    if any(_engine.second_trap_users(p) for p in point.probes):
        return "needs-second-trap"
    return None


def plan_region(m: ProbeManager, addr: int) -> OptRegion | str:
    """The instructions a jump at ``addr`` would replace, or the reason code refusing it:
    no exception table entry in the function holding ``addr``, the ISA's rules over the
    whole function (its original bytes), no other probe inside the region, and no
    instruction after the first that the kernel reserves or blacklists (a jump label, a
    static call: Linux's ``jump_label_text_reserved`` and ``static_call_text_reserved``
    over the region)."""
    func = m.aux.function_containing(addr, m.pid)
    if func is None:
        return "no-function"
    start, size = func
    if m.aux.search_exception_tables(start, size):
        return "exception-table"
    region = m.arch.plan_optimized_region(_original(m, start, size), start, addr, _Memory(m))
    if isinstance(region, str):
        return region
    if any(addr < other < region.end for other in m.break_list):
        return "probe-in-region"
    if any(m.aux.within_kprobe_blacklist(d.address) is not None for d in region.insns[1:]):
        return "reserved-in-region"
    return region


def _cpu_refusal(m: ProbeManager, point: ProbePoint, end: int) -> str | None:
    """Why a CPU's whereabouts defer optimizing the point now: one is handling it, is in
    its slot (it would come back into the region), or has its PC inside the region."""
    if point.busy:
        return "cpu-in-handler"
    if point.slot_addr is not None and m.aux.exec_memory_in_use(
            point.slot_addr, m.arch.slot_size, m.pid):
        return "cpu-in-slot"
    if m.aux.exec_memory_in_use(point.address + 1, end - point.address - 1, m.pid):
        return "cpu-in-region"
    return None


def optimize_refusal(m: ProbeManager, point: ProbePoint) -> str | None:
    """Why the point cannot be optimized now (``None``: it can), without changing
    anything."""
    why = _state_refusal(m, point)
    if why is not None:
        return why
    region = plan_region(m, point.address)
    if isinstance(region, str):
        return region
    return _cpu_refusal(m, point, region.end)


# -- writing and removing the jump ---------------------------------------------------------


def _write_jump(m: ProbeManager, point: ProbePoint, opt: Optimized) -> None:
    """Replace the breakpoint by the jump, the part after the breakpoint first
    (``text_poke_bp``: the breakpoint stays until the rest is in place).  All or
    nothing."""
    jump, addr, k = opt.plan.jump, point.address, len(point.breakpoint)
    m.patch(addr + k, jump[k:])
    try:
        m.patch(addr, jump[:k])
    except BaseException:
        _engine._restore_bytes(m, addr + k, opt.original[k:len(jump)])
        raise


def _remove_jump(m: ProbeManager, point: ProbePoint, opt: Optimized) -> None:
    """Put the breakpoint back, then the original bytes under the rest of the jump
    (``arch_unoptimize_kprobe``).  All or nothing."""
    jump, addr, k = opt.plan.jump, point.address, len(point.breakpoint)
    m.patch(addr, point.breakpoint)
    try:
        m.patch(addr + k, opt.original[k:len(jump)])
    except BaseException:
        _engine._restore_bytes(m, addr, jump[:k])
        raise


def _retire(m: ProbeManager, opt: Optimized) -> None:
    """Queue a detour no jump leads to any more for freeing after a grace period."""
    m.opt_garbage.append(opt)


def _free_detour(m: ProbeManager, detour: int) -> None:
    m.aux.free_kernel_exec_memory(detour)


def _try_optimize(m: ProbeManager, point: ProbePoint) -> str | None:
    """Optimize one point now; the reason code when it is not."""
    why = _state_refusal(m, point)
    region = plan_region(m, point.address) if why is None else why
    if isinstance(region, str):
        return region
    why = _cpu_refusal(m, point, region.end)
    if why is not None:
        m.opt_deferred.add(point.address)
        return why
    m.opt_deferred.discard(point.address)
    try:
        detour = m.aux.alloc_kernel_exec_memory(point.address, DETOUR_SIZE, _detour_reach(point))
    except OutOfReach:
        return "detour-out-of-reach"
    try:
        plan = m.arch.build_detour(region, point.address, detour)
        if isinstance(plan, str):
            _free_detour(m, detour)
            return plan
        opt = _install(m, point, detour, plan)
    except BaseException:
        _free_detour(m, detour)  # never reachable: no grace period needed
        raise
    point.opt = opt
    m.opt_entries[detour] = point
    m.emit("optimized", point.address, f"{plan.region} bytes, detour at {detour:#x}")
    return None


def _detour_reach(point: ProbePoint) -> SlotReach:
    """Where the detour may go: within :data:`DETOUR_REACH` of the probe, so that the jump
    there and the jump back both reach (the ISA's plan checks each exactly)."""
    return SlotReach(required=(Reach(point.address, 0, -DETOUR_REACH, DETOUR_REACH,
                                     "the jump to the detour"),))


def _install(m: ProbeManager, point: ProbePoint, detour: int, plan: OptPlan) -> Optimized:
    assert len(plan.detour) <= DETOUR_SIZE
    m.patch(detour, plan.detour)
    opt = Optimized(detour, plan, _original(m, point.address, plan.region))
    _write_jump(m, point, opt)
    return opt


def optimize_kprobes(m: ProbeManager) -> int:
    """Run the optimizer now (Linux's ``kprobe_optimizer`` work): optimize every eligible
    point of ``m`` in address order, and free the detours whose grace period has ended.
    Returns how many points it optimized.  A host failure while writing one point leaves
    that point a breakpoint, as it was, and propagates."""
    done = 0
    if m.pid is None:
        for addr in sorted(m.break_list):
            point = m.break_list.get(addr)
            if point is not None and point.opt is None and _try_optimize(m, point) is None:
                done += 1
    _engine.collect_slot_garbage(m)
    return done


def retry_deferred(m: ProbeManager) -> int:
    """At a quiescent point of the host (no run in progress), with ``m.optimization`` set,
    run the optimizer again if a CPU's whereabouts deferred a point; a failure is treated
    as in :func:`settle`.  Returns how many points it optimized."""
    if not m.optimization or not m.opt_deferred:
        return 0
    m.opt_deferred = {a for a in m.opt_deferred if a in m.break_list}
    return settle(m)


def settle(m: ProbeManager) -> int:
    """A lifecycle operation has succeeded: run the optimizer if ``m.optimization`` is
    set, and return how many points it optimized.  Its failure is logged and traced
    (``optimize-failed``), never raised: the operation itself is complete."""
    if not m.optimization or m.pid is not None:
        return 0
    try:
        return optimize_kprobes(m)
    except Exception as err:  # the optimizer is Linux's background work: it cannot fail
        LOG.warning("optimizer: %r; the probes stay breakpoints", err)
        m.emit("optimize-failed", 0, repr(err))
        return 0


# -- unoptimizing ----------------------------------------------------------------------------


def covering(m: ProbeManager, addr: int, probe: Kprobe | None = None) -> list[ProbePoint]:
    """The optimized points a change at ``addr`` needs unoptimized first: one whose region
    holds ``addr`` after its first byte (a new probe there), or the point at ``addr`` when
    ``probe`` (joining or changing there) needs the second trap or the point would lose its
    breakpoint.  Only optimized points are looked at, so with none (optimization off) this
    costs nothing."""
    out: list[ProbePoint] = []
    for point in {id(p): p for p in m.opt_entries.values()}.values():
        opt = point.opt
        if opt is None or not point.address <= addr < point.address + opt.plan.region:
            continue
        if point.address != addr or probe is None or _engine.second_trap_users(probe) \
                or not point.wants_breakpoint():
            out.append(point)
    return out


@contextmanager
def suspended(m: ProbeManager, points: list[ProbePoint]) -> Iterator[None]:
    """Unoptimize ``points`` for a lifecycle operation (the body): if the body raises, put
    the same jumps back and re-raise; if it succeeds, their detours are retired."""
    done: list[tuple[ProbePoint, Optimized]] = []
    try:
        for point in points:
            opt = point.opt
            assert opt is not None
            _remove_jump(m, point, opt)
            point.opt = None
            done.append((point, opt))
        yield
    except BaseException:
        _restore(m, done)
        raise
    for point, opt in done:
        _retire(m, opt)
        m.emit("unoptimized", point.address, f"detour at {opt.detour:#x}")


def _restore(m: ProbeManager, done: list[tuple[ProbePoint, Optimized]]) -> None:
    """Undo the unoptimization of :func:`suspended` after its body failed.  A second host
    failure here leaves the point a breakpoint (which behaves the same) and its detour
    retired; the first error is the one reported."""
    for point, opt in reversed(done):
        try:
            _write_jump(m, point, opt)
        except Exception:
            _retire(m, opt)
            continue
        point.opt = opt


def unoptimize_kprobe(m: ProbeManager, point: ProbePoint) -> bool:
    """Turn an optimized point back into a breakpoint; ``False`` when it was not
    optimized."""
    if point.opt is None:
        return False
    with suspended(m, [point]):
        pass
    return True


def collect_detours(m: ProbeManager) -> int:
    """Free the retired detours no CPU can be in (called by the slot collector, under the
    same grace-period conditions); returns how many were freed."""
    kept: list[Optimized] = []
    for opt in m.opt_garbage:
        if m.aux.exec_memory_in_use(opt.detour, len(opt.plan.detour), m.pid):
            kept.append(opt)
            continue
        m.opt_entries.pop(opt.detour, None)
        _free_detour(m, opt.detour)
    freed = len(m.opt_garbage) - len(kept)
    m.opt_garbage = kept
    return freed


# -- the hit path ----------------------------------------------------------------------------


def optimized_callback(m: ProbeManager, regs: PtRegs) -> bool:
    """The host stopped a CPU at a detour's host-call site (``regs.pc``): run the hit, as
    Linux's ``optimized_callback``.  ``True`` when the site was one of ``m``'s, and
    ``regs.pc`` then says where to continue.

    The pre-handlers see the frame a breakpoint hit gives them (x86_64: ``rip`` = probe
    address + 1, Linux's ``regs->ip = addr + INT3_INSN_SIZE``).  Their register changes are
    kept.  A pre-handler returning ``True`` has set the PC itself and the CPU continues
    there, skipping the region's first instruction as a breakpoint hit would (Linux
    ignores a changed ``ip`` on an optimized probe); otherwise the CPU continues at the
    relocated region.  A hit while this CPU is inside a handler is counted missed, without
    handlers.  A detour whose point was unoptimized while a CPU was on its way in still
    works: the point's live probes (perhaps none) run."""
    point = m.opt_entries.get(regs.pc)
    if point is None:
        return False
    detour = regs.pc
    copy = detour + _entry_size(m, point, detour)
    addr = point.address
    if m.ctl_stack():
        for probe in _engine._live(point):
            probe.nmissed += 1
        m.emit("missed", addr)
        regs.pc = copy
        return True
    m.emit("hit", addr)
    point.busy += 1
    regs.pc = m.arch.trap_pc(addr)
    try:
        skipped = _engine._run_pre(m, point, regs)
    finally:
        _engine._done_with(m, point)
    if skipped:
        m.emit("skipped", addr)
        return True
    regs.pc = copy
    m.emit("detour", addr, f"{copy:#x}")
    return True


def _entry_size(m: ProbeManager, point: ProbePoint, detour: int) -> int:
    """The host-call site's size in the detour at ``detour`` (live or retired)."""
    if point.opt is not None and point.opt.detour == detour:
        return point.opt.plan.entry
    return next(o.plan.entry for o in m.opt_garbage if o.detour == detour)


def detour_fault(m: ProbeManager, regs: PtRegs) -> int | None:
    """A fault at ``regs.pc`` inside a detour's relocated instructions: move the PC to the
    original instruction it copies and return that address (``None``: not in a detour).
    No probe is in progress there, so no fault handler runs: the fault is the code's own,
    reported where the unprobed code reports it."""
    opts = [p.opt for p in m.opt_entries.values() if p.opt is not None] + m.opt_garbage
    for opt in opts:
        off = regs.pc - opt.detour
        if not opt.plan.entry <= off < opt.plan.back:
            continue
        i = max(i for i, c in enumerate(opt.plan.copies) if c <= off)
        address = _owner_address(m, opt) + opt.plan.starts[i]
        regs.pc = address
        m.emit("slot-fault", address, "in a detour")
        return address
    return None


def _owner_address(m: ProbeManager, opt: Optimized) -> int:
    point = m.opt_entries.get(opt.detour)
    assert point is not None
    return point.address
