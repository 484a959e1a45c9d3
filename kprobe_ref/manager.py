"""The probe manager: registration, the trap entry points, and per-CPU probe state.

Mirrors Linux ``kernel/kprobes.c`` and ``arch/*/kernel/probes/kprobes.c``
(``kprobe_handler``, ``post_kprobe_handler``, ``kprobe_fault_handler``), and the seed
crate's ``ProbeManager`` with its two tables:

- ``break_list``: probe address -> point, consulted when a probe breakpoint traps;
- ``debug_list``: end-of-step breakpoint address -> point, consulted when a slot's step ends.

A stepped point may also have a *boosted* slot variant that ends with a jump back instead of
the end-of-step breakpoint (``docs/boost.md``).  Which variant a hit uses is decided at the
hit: the boosted one when no live probe there needs the second trap (a post handler or an
event callback), so adding a post handler never rewrites a slot a CPU may be executing.  A
boosted step leaves no per-CPU state behind, so a fault inside it is attributed to its probe
by the slot address (``boost_owner``), and a released point's slot is freed only after a
grace period (:func:`collect_slot_garbage`): when no CPU is inside a probe handler and the
host says no CPU, running or preempted, has its PC in it.

The probe in progress on a CPU (which point, which stage) lives in that CPU's control block
stack (:class:`CtlBlock`), never in a global, so several CPUs can be inside probes at once.
A hit while the same CPU is already inside a handler is *reentrant*: it is counted in
``nmissed`` and the instruction still executes, without handlers (Linux's
``kprobe_reenter``).  A handler that raises is logged, counted, reported to the probe's
fault handler and the frame is restored to what it was before that handler, so execution
continues as if it had not run (strict mode re-raises instead).  A run that stops for good
in the middle of a probe (:func:`kprobe_abort`) leaves no control block behind.

Lifecycle operations are all or nothing: when the host fails a write, registration,
unregistration, enabling and disabling leave memory, slots and tables as they were and the
error propagates.

A point may be *jump-optimized* (``kprobe_ref/optimize.py``, ``docs/optprobes.md``): its
breakpoint replaced by a jump to a detour buffer, its hits delivered by the host without a
trap.  The lifecycle operations here unoptimize the points a change needs back as
breakpoints first (and put the same jumps back if the change fails), and run the optimizer
once they have succeeded when ``optimization`` is set.
"""

from __future__ import annotations

import bisect
import enum
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from types import ModuleType
from typing import TYPE_CHECKING

from kprobe_ref.arch import ArchOps, SlotPlan, SlotReach, Verdict, get_arch, instruction_starts
from kprobe_ref.errors import (
    BlacklistedAddress,
    InvalidAddress,
    InvalidProbeDefinition,
    NotInstructionBoundary,
    NotRegistered,
    OutOfReach,
    SimulatedFault,
    SymbolNotUnique,
    UnknownSymbol,
    UnsupportedInstruction,
)
from kprobe_ref.host import KprobeAuxiliaryOps
from kprobe_ref.kernel.ftrace import adjust_kprobe_addr
from kprobe_ref.point import Optimized, ProbePoint, ProbePointList
from kprobe_ref.probe import EventCallback, Handler, Kprobe, ProbeBuilder
from kprobe_ref.ptregs import PtRegs
from kprobe_ref.state import ConcreteState

if TYPE_CHECKING:
    from kprobe_ref.ftrace import KprobeFtrace
    from kprobe_ref.kretprobe import RethookTable

__all__ = [
    "CtlBlock",
    "EventKind",
    "ProbeEvent",
    "ProbeManager",
    "Status",
    "attach_probe",
    "call_handler",
    "check_probe",
    "check_registered",
    "collect_slot_garbage",
    "describe_probe",
    "instruction_starts",
    "kprobe_abort",
    "kprobe_fault_handler",
    "kprobe_handler_from_break",
    "kprobe_handler_from_debug",
    "probe_address",
    "register_kprobe",
    "run_event_callbacks",
    "sequence_hazard",
    "unregister_kprobe",
]


class Status(enum.Enum):
    """Stage of the probe in progress on a CPU (Linux's ``kprobe_status``)."""

    HIT_ACTIVE = "hit-active"
    """Pre-handlers are running."""
    HIT_SS = "hit-ss"
    """The slot is being stepped; post-handlers follow."""
    HIT_SSDONE = "hit-ssdone"
    """Post-handlers are running."""
    REENTER = "reenter"
    """A reentrant hit's slot is being stepped; no handlers run."""


@dataclass
class CtlBlock:
    """One probe in progress on one CPU."""

    point: ProbePoint | None
    """The point being handled (``None`` while a return handler runs)."""
    status: Status
    saved_scratch: int | None = None


class EventKind(enum.StrEnum):
    """Every kind of tracer event the engine emits.  A member is a ``str`` equal to its
    value, so tracers may compare ``event.kind`` with plain strings."""

    SLOT_PREPARED = "slot-prepared"
    """A stepped point's out-of-line slot was written (``detail``: rule and address)."""
    HIT = "hit"
    """A probe's breakpoint trapped and its handlers are about to run."""
    MISSED = "missed"
    """A hit while the CPU was already inside a handler: no handler runs."""
    SKIPPED = "skipped"
    """A hit on a point whose probes are all disabled."""
    SIMULATED = "simulated"
    """The probed instruction's effect was computed by its simulation rule."""
    SLOT = "slot"
    """A two-trap out-of-line step begins."""
    BOOSTED = "boosted"
    """A boosted step begins (no step-done follows: the slot jumps back)."""
    STEP_DONE = "step-done"
    """The end-of-step trap of a two-trap step."""
    HANDLER_FAULT = "handler-fault"
    """A handler raised; the error is counted and logged."""
    SLOT_FAULT = "slot-fault"
    """The probed instruction faulted in its slot; reported at the probed address."""
    ABORTED = "aborted"
    """A run ended by an exception reset the CPU's probes in progress."""
    RETURN_FIRED = "return-fired"
    """A return probe's handler ran at the hooked return."""
    RETURN_MISSED = "return-missed"
    """A hooked call found no free instance (``maxactive``)."""
    RETURN_DROPPED = "return-dropped"
    """An instance was given back without its handler running (an unwound frame)."""
    FTRACE = "ftrace"
    """A hit on an ftrace site passed its NOP: post-handlers follow, no trap."""
    OPTIMIZED = "optimized"
    """A point's breakpoint was replaced by a jump to its detour (``docs/optprobes.md``;
    ``detail``: region size and detour address)."""
    UNOPTIMIZED = "unoptimized"
    """An optimized point went back to its breakpoint; its detour is retired."""
    DETOUR = "detour"
    """An optimized hit's handlers ran (no trap): the CPU continues in the detour."""
    OPTIMIZE_FAILED = "optimize-failed"
    """The optimizer run that follows a lifecycle operation failed (logged, not raised)."""


@dataclass(frozen=True)
class ProbeEvent:
    """A tracer event: its :class:`EventKind`, the probed address, the CPU and a detail."""

    kind: EventKind
    address: int
    cpu: int
    detail: str = ""


Tracer = Callable[[ProbeEvent], None]

OPTIMIZE_ENV = "KPROBE_REF_OPTIMIZE"
"""An environment variable that, set to anything but ``0``, turns the jump optimizer on in
every new manager (how the whole test suite is run with optimized probes)."""

LOG = logging.getLogger("kprobe_ref")
"""Where handler failures are reported (a warning per failure)."""


class ProbeManager:
    """The probe tables of one address space (the kernel, or one process)."""

    def __init__(
        self, arch: ArchOps | str, aux: KprobeAuxiliaryOps, pid: int | None = None
    ) -> None:
        self.arch: ArchOps = get_arch(arch) if isinstance(arch, str) else arch
        self.aux = aux
        self.pid = pid
        self.break_list: dict[int, ProbePoint] = {}
        self.debug_list: dict[int, ProbePoint] = {}
        self.boost_owner: dict[int, ProbePoint] = {}
        """Boosted slot variant address -> point, until the slot is freed."""
        self.slot_garbage: list[ProbePoint] = []
        """Released points whose slots wait for a grace period before being freed."""
        self.optimization = os.environ.get(OPTIMIZE_ENV, "") not in ("", "0")
        """Run the jump optimizer whenever a lifecycle operation settles (Linux's
        ``debug.kprobes_optimization``; ``docs/optprobes.md``).  Off unless the environment
        sets :data:`OPTIMIZE_ENV`, so that trap counts stay those of breakpoints."""
        self.opt_entries: dict[int, ProbePoint] = {}
        """Detour host-call site -> optimized point, until the detour is freed."""
        self.opt_garbage: list[Optimized] = []
        """Retired detours waiting for a grace period before being freed."""
        self.opt_deferred: set[int] = set()
        """Points the optimizer left because a CPU was in the way, to retry later."""
        self.tracers: list[Tracer] = []
        self._ctl: dict[int, list[CtlBlock]] = {}
        self.rethooks: RethookTable | None = None
        self.ftrace: KprobeFtrace | None = None
        """The loaded kernel's ftrace sites, when kprobes there go through ftrace."""
        self.strict = False
        """Strict mode: a handler's exception is re-raised (after the frame is restored,
        the fault handler told and the CPU's probe state cleaned up) instead of being
        logged and absorbed.  Test harnesses use it so a broken handler fails the test."""

    @property
    def user(self) -> bool:
        """Whether this manager probes process memory (uprobes)."""
        return self.pid is not None

    def emit(self, kind: str, address: int, detail: str = "") -> None:
        """Send an event to every tracer; ``kind`` must name an :class:`EventKind`."""
        if not self.tracers:
            return
        event = ProbeEvent(EventKind(kind), address, self.aux.current_cpu(), detail)
        for tracer in list(self.tracers):
            tracer(event)

    def ctl_stack(self) -> list[CtlBlock]:
        """The current CPU's stack of probes in progress (innermost last)."""
        return self._ctl.setdefault(self.aux.current_cpu(), [])

    # -- memory -----------------------------------------------------------------------------
    def patch(self, addr: int, data: bytes) -> None:
        """Write code bytes through the host's writable window, all or nothing: when the
        host fails part-way (the write, or restoring the permissions after it), the bytes
        that were there before are put back and the host's error propagates."""
        before = self.aux.read_memory(addr, len(data), self.pid)
        try:
            self.aux.set_writeable_for_address(
                addr, len(data), self.pid, lambda: self.aux.write_memory(addr, data, self.pid)
            )
        except BaseException:
            _restore_bytes(self, addr, before)
            raise

    def arm(self, point: ProbePoint) -> None:
        """Put the point's breakpoint in memory."""
        if not point.armed:
            self.patch(point.address, point.breakpoint)
            point.armed = True

    def disarm(self, point: ProbePoint) -> None:
        """Restore the original bytes under the point's breakpoint."""
        if point.armed:
            self.patch(point.address, point.original[: len(point.breakpoint)])
            point.armed = False


def _optimizer() -> ModuleType:
    """The jump optimizer (``kprobe_ref.optimize``), which builds on this module."""
    from kprobe_ref import optimize

    return optimize


def _restore_bytes(m: ProbeManager, addr: int, before: bytes) -> None:
    """Best-effort undo of a failed patch: rewrite ``before`` if memory no longer holds it.
    A second failure here is dropped: the first error is the one the caller sees."""
    try:
        if m.aux.read_memory(addr, len(before), m.pid) != before:
            m.aux.set_writeable_for_address(
                addr, len(before), m.pid, lambda: m.aux.write_memory(addr, before, m.pid)
            )
    except Exception:  # the host is failing; the original error is reported instead
        return


# -- registration ---------------------------------------------------------------------------


def _read_code(m: ProbeManager, points: ProbePointList, addr: int) -> bytes:
    """Read up to one maximal instruction at ``addr`` as it was before any probe."""
    n = m.arch.max_insn_len
    while n > 0 and not m.aux.is_executable(addr, n, m.pid):
        n -= 1
    if n == 0:
        where = "kernel" if m.pid is None else f"process {m.pid}"
        raise InvalidAddress(f"{addr:#x} is not mapped executable in {where} memory")
    return points.overlay_original(addr, m.aux.read_memory(addr, n, m.pid))


def _check_boundary(m: ProbeManager, points: ProbePointList, addr: int) -> None:
    """On a variable-length ISA a kprobe must start an instruction, found by decoding from
    the start of the known function containing it.  A kprobe in no known function is
    refused, as Linux's ``can_probe`` refuses what kallsyms cannot place: its breakpoint
    could land inside an instruction.  A uprobe address is taken as given."""
    if not m.arch.variable_length:
        return
    func = m.aux.function_containing(addr, m.pid)
    if func is None:
        if m.pid is None:
            raise InvalidAddress(
                f"{addr:#x} lies in no known function, so its instruction boundaries are "
                "unknown (describe hand-mapped code with Machine.add_symbol)"
            )
        return
    start, size = func
    code = points.overlay_original(start, m.aux.read_memory(start, size, m.pid))
    starts, stuck = instruction_starts(m.arch.name, start, code)
    i = bisect.bisect_right(starts, addr) - 1
    if i >= 0 and starts[i] == addr:
        return
    if stuck is not None and stuck <= addr:
        raise InvalidAddress(f"cannot decode {stuck:#x} on the way from {start:#x} to {addr:#x}")
    covering = starts[i] if i >= 0 else start
    raise NotInstructionBoundary(
        f"{addr:#x} is not an instruction boundary: the instruction at "
        f"{covering:#x} covers it (function starts at {start:#x})"
    )


@lru_cache(maxsize=4096)
def sequence_hazard(isa: str, code: bytes, start: int, addr: int) -> str | None:
    """The ISA's ``sequence_hazard`` of ``code`` (the original bytes from ``start`` up to
    and including the instruction at ``addr``), cached: the answer depends on nothing
    else, and probing every instruction of a function scans overlapping windows."""
    return get_arch(isa).sequence_hazard(code, start, addr)


def _check_sequence(m: ProbeManager, points: ProbePointList, addr: int, length: int) -> None:
    """Refuse a probe inside an exclusive load/store-conditional sequence."""
    func = m.aux.function_containing(addr, m.pid)
    window = 32 * max(m.arch.insn_align, 4)
    start = func[0] if func is not None else addr
    start = max(start, addr - window)
    while start < addr and not m.aux.is_executable(start, addr - start, m.pid):
        start += m.arch.insn_align
    code = points.overlay_original(start, m.aux.read_memory(start, addr - start + length, m.pid))
    reason = sequence_hazard(m.arch.name, code, start, addr)
    if reason is not None:
        raise UnsupportedInstruction(
            f"cannot probe {addr:#x}: it lies inside an exclusive load/store-conditional "
            f"sequence ({reason})",
            reason,
            addr,
        )


def _new_point(m: ProbeManager, points: ProbePointList, addr: int) -> ProbePoint:
    """Validate ``addr`` and build its point (no memory is changed)."""
    if addr % m.arch.insn_align:
        raise InvalidAddress(f"{addr:#x} is not {m.arch.insn_align}-byte aligned")
    forbidden = m.aux.probe_forbidden(addr, m.pid)
    if forbidden is not None:
        raise InvalidAddress(f"{addr:#x} must not be probed: {forbidden}")
    cause = m.aux.within_kprobe_blacklist(addr) if m.pid is None else None
    if cause is not None:
        raise BlacklistedAddress(
            f"{addr:#x} must not be probed: the kernel's kprobe blacklist refuses it ({cause})",
            cause, addr)
    code = _read_code(m, points, addr)
    _check_boundary(m, points, addr)
    d = m.arch.decode(code, addr, m.user)
    if d.verdict is Verdict.REJECT:
        raise UnsupportedInstruction(
            f"cannot probe {d.text!r} at {addr:#x}: {d.klass} ({d.reason})", d.reason, addr
        )
    _check_sequence(m, points, addr, d.length)
    point = ProbePoint(addr, m.pid, d.raw, d, m.arch.breakpoint(d, m.user))
    return point if m.ftrace is None else m.ftrace.adopt(m, point)


def check_probe(m: ProbeManager, points: ProbePointList, addr: int) -> ProbePoint:
    """Answer "can the instruction at ``addr`` be probed, and how?" without changing
    anything: return the point registration would create (decoded verdict, class and reason,
    breakpoint), or raise the ``KprobeError`` registration would raise."""
    existing = points.get(addr)
    return existing if existing is not None else _new_point(m, points, addr)


def _install_slot(m: ProbeManager, point: ProbePoint) -> None:
    """Allocate, fill and register the out-of-line slot of a stepped point."""
    size = m.arch.slot_size
    reach = m.arch.reach(point.decoded, m.user)
    if m.pid is None:
        slot = m.aux.alloc_kernel_exec_memory(point.address, size, reach)
    else:
        slot = m.aux.alloc_user_exec_memory(m.pid, point.address, size, reach)
    try:
        _check_reach(point, slot, reach)
        plan = m.arch.build_slot(point.decoded, slot, m.user)
        m.patch(slot, plan.code)
        boost = _prepare_boost(m, point, slot, plan)
    except BaseException:
        _free_slot(m, slot)
        raise
    point.slot_addr, point.plan = slot, plan
    m.debug_list[slot + plan.break_offset] = point
    if boost is not None:
        point.boost_addr, point.boost_plan = slot + m.arch.boost_offset, boost
        m.boost_owner[point.boost_addr] = point
    m.emit("slot-prepared", point.address, f"{plan.rule} at {slot:#x}")


def _check_reach(point: ProbePoint, slot: int, reach: SlotReach) -> None:
    """Refuse a slot the host placed where a relocation constraint fails (the same check
    for kernel slots and a process's out-of-line area)."""
    for r in reach.required:
        if not r.holds(slot):
            first, last = r.window()
            raise OutOfReach(
                f"a slot at {slot:#x} is out of reach of the probe at {point.address:#x}: "
                f"{r.why} needs the slot in {first:#x}..{last:#x}",
                "slot-out-of-reach", point.address)


def _prepare_boost(m: ProbeManager, point: ProbePoint, slot: int, plan: SlotPlan
                   ) -> SlotPlan | None:
    """Write the slot's boosted variant next to the two-trap one, if the instruction may be
    boosted, needs no scratch register and the jump back reaches from there; ``None``
    otherwise (the point then always takes two traps)."""
    if plan.scratch is not None:
        return None
    at = slot + m.arch.boost_offset
    boost = m.arch.build_boosted_slot(point.decoded, at, m.user)
    if boost is None or m.arch.boost_offset + len(boost.code) > m.arch.slot_size:
        return None
    m.patch(at, boost.code)
    return boost


def _free_slot(m: ProbeManager, slot: int) -> None:
    if m.pid is None:
        m.aux.free_kernel_exec_memory(slot)
    else:
        m.aux.free_user_exec_memory(m.pid, slot)


def _done_with(m: ProbeManager, point: ProbePoint) -> None:
    """This CPU has finished with the point; free a retired point's slot."""
    point.busy -= 1
    if point.retired and point.busy == 0:
        _release_point(m, point)


def _release_point(m: ProbeManager, point: ProbePoint) -> None:
    """Forget the point (its last step has ended) and queue its slot for freeing after a
    grace period."""
    brk = point.step_break_addr
    if brk is not None:
        m.debug_list.pop(brk, None)
        m.slot_garbage.append(point)


def collect_slot_garbage(m: ProbeManager) -> int:
    """Free the queued slots no CPU can be inside; return how many were freed.

    A boosted step leaves no trace in the per-CPU state, so the engine cannot know by itself
    that a CPU has left a slot.  A grace period stands in: nothing is freed while any CPU
    is inside a probe handler (it may be about to enter a slot), and a slot is kept while
    the host reports a CPU's PC, or a preempted context's, inside it
    (:meth:`~kprobe_ref.host.KprobeAuxiliaryOps.exec_memory_in_use`).  Linux does the same
    with ``synchronize_rcu()`` before collecting dirty instruction slots."""
    if any(m._ctl.values()):
        return 0
    if m.opt_garbage:
        _optimizer().collect_detours(m)
    kept: list[ProbePoint] = []
    for point in m.slot_garbage:
        slot = point.slot_addr
        assert slot is not None
        if m.aux.exec_memory_in_use(slot, m.arch.slot_size, m.pid):
            kept.append(point)
            continue
        if point.boost_addr is not None:
            m.boost_owner.pop(point.boost_addr, None)
        _free_slot(m, slot)
        point.slot_addr = point.boost_addr = None
    freed = len(m.slot_garbage) - len(kept)
    m.slot_garbage = kept
    return freed


def _toggle(m: ProbeManager) -> Callable[[Kprobe], None]:
    def toggle(probe: Kprobe) -> None:
        point = probe.point
        if point is None or not probe.registered:
            return
        opt = _optimizer()
        with opt.suspended(m, opt.covering(m, point.address, probe)):
            if point.wants_breakpoint():
                m.arm(point)
            else:
                m.disarm(point)
        opt.settle(m)

    return toggle


def attach_probe(
    m: ProbeManager, points: ProbePointList, addr: int, probe: Kprobe
) -> Kprobe:
    """Attach a handle at ``addr``, creating and arming the point as needed.

    All or nothing: if the host fails (allocating or filling the slot, writing the
    breakpoint), the handle is detached again, a point created here is forgotten and its
    slot freed, memory holds what it held before, and the host's error propagates."""
    opt = _optimizer()
    covering = opt.covering(m, addr, probe)
    if covering and points.get(addr) is None:
        check_probe(m, points, addr)  # refuse before unoptimizing anything
    with opt.suspended(m, covering):
        _attach(m, points, addr, probe)
    collect_slot_garbage(m)
    opt.settle(m)
    return probe


def _attach(m: ProbeManager, points: ProbePointList, addr: int, probe: Kprobe) -> None:
    point = points.get(addr)
    created = point is None
    if point is None:
        point = _new_point(m, points, addr)
        if point.decoded.verdict is Verdict.STEP_OUT_OF_LINE and not point.ftrace:
            _install_slot(m, point)
        points[addr] = point
        m.break_list[addr] = point
    point.probes.append(probe)
    probe.point, probe.registered, probe.on_toggle = point, True, _toggle(m)
    try:
        if probe.enabled:
            m.arm(point)
    except BaseException:
        _detach_failed(m, points, point, probe, created)
        raise


def _detach_failed(
    m: ProbeManager, points: ProbePointList, point: ProbePoint, probe: Kprobe, created: bool
) -> None:
    """Undo :func:`attach_probe` after the host failed to arm the point."""
    point.probes.remove(probe)
    probe.point, probe.registered, probe.on_toggle = None, False, None
    if created:
        del points[point.address]
        m.break_list.pop(point.address, None)
        _discard_point(m, point)


def _discard_point(m: ProbeManager, point: ProbePoint) -> None:
    """Forget a point that was never armed and free its slot at once: no CPU can have
    entered a slot whose breakpoint was never written, so no grace period is needed."""
    brk = point.step_break_addr
    if brk is not None:
        m.debug_list.pop(brk, None)
    if point.boost_addr is not None:
        m.boost_owner.pop(point.boost_addr, None)
    if point.slot_addr is not None:
        _free_slot(m, point.slot_addr)
    point.slot_addr = point.boost_addr = None


def _check_mode(m: ProbeManager, builder: ProbeBuilder) -> None:
    if m.pid is None and builder.user_pid is not None:
        raise InvalidProbeDefinition("a probe with user mode is registered with register_uprobe")
    if m.pid is not None and builder.user_pid != m.pid:
        raise InvalidProbeDefinition(
            f"uprobe for process {builder.user_pid} given the tables of process {m.pid}"
        )


def probe_address(m: ProbeManager, builder: ProbeBuilder) -> int:
    """Where ``builder`` puts its probe: ``symbol_addr + offset``, or the address of the
    symbol named by ``with_symbol`` (looked up by the host, as Linux's
    ``kallsyms_lookup_name``) plus the offset.  An unknown name is ``UnknownSymbol``, a
    name several symbols share ``SymbolNotUnique``; naming both is an error."""
    if builder.symbol is None:
        return builder.address()
    if builder.symbol_addr is not None:
        raise InvalidProbeDefinition(
            f"probe given both a symbol ({builder.symbol!r}) and an address "
            f"({builder.symbol_addr:#x}): use one"
        )
    if not isinstance(builder.symbol, str) or not isinstance(builder.offset, int):
        raise InvalidProbeDefinition("a symbol name is a string and an offset an integer")
    found = m.aux.lookup_symbol(builder.symbol, m.pid)
    if not found:
        raise UnknownSymbol(f"no symbol {builder.symbol!r} is known")
    if len(found) > 1:
        where = ", ".join(f"{a:#x}" for a in found)
        raise SymbolNotUnique(
            f"the symbol {builder.symbol!r} is not unique ({where}): give an address"
        )
    return (found[0] + builder.offset) & ((1 << 64) - 1)


def register_kprobe(m: ProbeManager, points: ProbePointList, builder: ProbeBuilder) -> Kprobe:
    """Register a kprobe and return its handle.

    Raises a :class:`~kprobe_ref.errors.KprobeError` (and changes nothing) when the address
    is misaligned, unmapped, not an instruction boundary, reserved for the probe machinery,
    or holds an instruction that cannot be probed."""
    if not isinstance(builder, ProbeBuilder):
        raise InvalidProbeDefinition(f"expected a ProbeBuilder, got {type(builder).__name__}")
    _check_mode(m, builder)
    probe = Kprobe(
        address=adjust_kprobe_addr(m, probe_address(m, builder)),
        pre_handler=builder.pre_handler,
        post_handler=builder.post_handler,
        fault_handler=builder.fault_handler,
        data=builder.data,
        user_pid=builder.user_pid,
        enabled=builder.enable,
    )
    for callback_id, callback in builder.event_callbacks:
        probe.register_event_callback(callback_id, callback)
    return attach_probe(m, points, probe.address, probe)


def unregister_kprobe(m: ProbeManager, points: ProbePointList, probe: Kprobe) -> None:
    """Remove a probe.  The original bytes come back when it was the last probe at its
    address; a slot being stepped stays until its step ends.  A probe that is not
    registered (a double unregister) is a ``NotRegistered`` error.

    All or nothing: if the host fails to restore the original bytes, the probe stays
    registered exactly as it was (its breakpoint in memory, removable by a later
    unregister) and the host's error propagates."""
    point = probe.point
    if not probe.registered or point is None or points.get(point.address) is not point:
        raise NotRegistered(f"probe at {probe.address:#x} is not registered")
    index = point.probes.index(probe)
    point.probes.remove(probe)
    opt = _optimizer()
    losing = [point] if point.opt is not None and not point.wants_breakpoint() else []
    try:
        with opt.suspended(m, losing):
            if not point.wants_breakpoint():
                m.disarm(point)
    except BaseException:
        point.probes.insert(index, probe)
        raise
    probe.registered = False
    if not point.probes:
        _forget_point(m, points, point)
    opt.settle(m)


def _forget_point(m: ProbeManager, points: ProbePointList, point: ProbePoint) -> None:
    """The last probe at the point has gone: drop it from the tables and release its slot
    (now, or when the CPU handling it is done)."""
    del points[point.address]
    m.break_list.pop(point.address, None)
    if point.busy:
        point.retired = True
    else:
        _release_point(m, point)
    collect_slot_garbage(m)


# -- trap entry points ----------------------------------------------------------------------


def call_handler(
    m: ProbeManager, probe: Kprobe, f: Handler, data: object, regs: PtRegs,
    kind: str = "handler",
) -> bool:
    """Run one handler; if it raises, restore ``regs``, make the failure visible (a
    warning on the ``kprobe_ref`` logger naming the probe and the exception, the probe's
    ``handler_errors`` count, a ``handler-fault`` event), report it to the probe's fault
    handler and carry on as if the handler had not run.  In strict mode
    (``m.strict``) the exception is re-raised after that cleanup.  Returns the handler's
    ``True`` (PC set) or ``False``."""
    snapshot = regs.copy()
    try:
        return f(data, regs) is True
    except Exception as err:  # a handler's failure must not take the trap path down
        regs.restore_from(snapshot)
        _report_handler_failure(m, probe, kind, err)
        if probe.fault_handler is not None:
            try:
                probe.fault_handler(data, regs, err)
            except Exception as err2:
                _report_handler_failure(m, probe, "fault handler", err2)
            regs.restore_from(snapshot)
        if m.strict:
            raise
        return False


def describe_probe(m: ProbeManager, address: int) -> str:
    """Name a probe in messages: ``kprobe at 0x...`` or ``uprobe at 0x... in process N``."""
    if m.pid is None:
        return f"kprobe at {address:#x}"
    return f"uprobe at {address:#x} in process {m.pid}"


def _report_handler_failure(m: ProbeManager, probe: Kprobe, kind: str, err: Exception) -> None:
    """Count, log and trace one handler failure."""
    probe.handler_errors += 1
    what = describe_probe(m, probe.address)
    after = "re-raised (strict mode)" if m.strict else "execution continues as if it had not run"
    LOG.warning("%s: %s raised %r; %s", what, kind, err, after)
    m.emit("handler-fault", probe.address, f"{kind}: {err!r}")


def _live(point: ProbePoint) -> list[Kprobe]:
    return [p for p in list(point.probes) if p.registered and p.enabled]


def second_trap_users(probe: Kprobe) -> bool:
    """Whether the probe runs anything at the end of a step (the second trap): a post
    handler, or an event callback.  The one place that reads them for boosting."""
    return probe.post_handler is not None or probe.has_event_callbacks()


def _can_boost_now(point: ProbePoint) -> bool:
    """Whether this hit may take the point's boosted variant: it has one and no live probe
    needs the second trap."""
    return point.boost_plan is not None and not any(second_trap_users(p) for p in _live(point))


def _execute(m: ProbeManager, point: ProbePoint, regs: PtRegs, status: Status) -> bool:
    """Carry out the probed instruction: simulate it or send the CPU to the boosted slot
    variant (returns True: nothing more to do at a second trap), or send it to the two-trap
    slot (returns False: a step is in progress).  A reentrant hit never boosts, so a fault
    in a boosted variant always belongs to a full hit."""
    d = point.decoded
    if d.verdict is Verdict.SIMULATE:
        try:
            m.arch.simulate(d, ConcreteState(regs, m.aux, m.pid, point.address))
        except SimulatedFault:
            _done_with(m, point)
            raise
        m.emit("simulated", point.address, d.klass)
        return True
    assert point.plan is not None and point.slot_addr is not None
    if status is Status.HIT_SS and _can_boost_now(point):
        assert point.boost_addr is not None
        regs.pc = point.boost_addr
        m.emit("boosted", point.address, f"{point.boost_addr:#x}")
        return True
    ctl = CtlBlock(point, status)
    if point.plan.scratch is not None:
        ctl.saved_scratch = regs.get(point.plan.scratch)
        regs.set(point.plan.scratch, point.plan.scratch_value)
    m.ctl_stack().append(ctl)
    regs.pc = point.slot_addr
    m.emit("slot", point.address, f"{point.slot_addr:#x}")
    return False


def _reenter(m: ProbeManager, point: ProbePoint, regs: PtRegs) -> bool:
    for probe in _live(point):
        probe.nmissed += 1
    m.emit("missed", point.address)
    regs.pc = point.address
    point.busy += 1
    if _execute(m, point, regs, Status.REENTER):
        _done_with(m, point)
    return True


def run_event_callbacks(m: ProbeManager, probe: Kprobe, callbacks: list[EventCallback],
                        regs: PtRegs) -> None:
    """Run event callbacks in order; one that raises is reported like a failing handler
    (``regs`` restored, the probe's fault handler told) and the rest still run."""
    for callback in callbacks:
        call_handler(m, probe, _as_handler(callback), probe.data, regs)


def _as_handler(callback: EventCallback) -> Handler:
    def handler(_data: object, regs: PtRegs) -> None:
        callback(regs)

    return handler


def _run_post(m: ProbeManager, point: ProbePoint, regs: PtRegs) -> None:
    """The step is complete: post handlers, each followed by its probe's event callbacks."""
    for probe in _live(point):
        if probe.post_handler is not None:
            call_handler(m, probe, probe.post_handler, probe.data, regs, "post-handler")
        if probe.callbacks:
            run_event_callbacks(m, probe, probe.callbacks.ordered(), regs)


def kprobe_handler_from_break(m: ProbeManager, regs: PtRegs) -> bool:
    """Handle a breakpoint trap: ``True`` when it was a probe's (or the return trampoline's)
    and ``regs`` now says where to continue."""
    addr = m.arch.trap_address(regs)
    if m.rethooks is not None and addr == m.rethooks.trampoline:
        return m.rethooks.handle_trampoline(regs)
    point = m.break_list.get(addr)
    if point is None:
        return False
    stack = m.ctl_stack()
    if stack:
        return _reenter(m, point, regs)
    m.emit("hit", addr)
    point.busy += 1
    try:
        skipped = _run_pre(m, point, regs)
    except BaseException:
        _done_with(m, point)
        raise
    if skipped:
        m.emit("skipped", addr)
        _done_with(m, point)
        return True
    regs.pc = point.address
    if _execute(m, point, regs, Status.HIT_SS):
        stack.append(CtlBlock(point, Status.HIT_SSDONE))
        try:
            _run_post(m, point, regs)
        finally:
            stack.pop()
            _done_with(m, point)
    return True


def _run_pre(m: ProbeManager, point: ProbePoint, regs: PtRegs) -> bool:
    """Run the pre-handlers in registration order; ``True`` when one set the PC itself."""
    stack = m.ctl_stack()
    stack.append(CtlBlock(point, Status.HIT_ACTIVE))
    try:
        for probe in _live(point):
            probe.nhit += 1
            if probe.pre_handler is not None and call_handler(
                m, probe, probe.pre_handler, probe.data, regs, "pre-handler"
            ):
                return True
        return False
    finally:
        stack.pop()


def _finish_step(m: ProbeManager, ctl: CtlBlock, regs: PtRegs) -> None:
    point = ctl.point
    assert point is not None and point.plan is not None
    if point.plan.scratch is not None and ctl.saved_scratch is not None:
        regs.set(point.plan.scratch, ctl.saved_scratch)


def kprobe_handler_from_debug(m: ProbeManager, regs: PtRegs) -> bool:
    """Handle the end-of-step breakpoint of a slot: continue after the probed instruction
    and run the post-handlers.  ``True`` when the trap was a step of this manager's."""
    addr = m.arch.trap_address(regs)
    point = m.debug_list.get(addr)
    stack = m.ctl_stack()
    if point is None or not stack or stack[-1].point is not point:
        return False
    ctl = stack[-1]
    if ctl.status not in (Status.HIT_SS, Status.REENTER):
        return False
    assert point.plan is not None
    regs.pc = (point.address + point.plan.resume_delta) & ((1 << 64) - 1)
    _finish_step(m, ctl, regs)
    m.emit("step-done", point.address)
    try:
        if ctl.status is Status.HIT_SS:
            ctl.status = Status.HIT_SSDONE
            _run_post(m, point, regs)
    finally:
        stack.pop()
        _done_with(m, point)
    return True


def kprobe_fault_handler(m: ProbeManager, regs: PtRegs, error: BaseException) -> int | None:
    """Handle a fault while a slot is being stepped: put the PC back at the probed
    instruction, clear the CPU's probe state, tell the fault handlers, and return the
    probed address the fault is to be reported at (``None`` if no step was in progress)."""
    stack = m.ctl_stack()
    if not stack or stack[-1].status not in (Status.HIT_SS, Status.REENTER):
        return _boosted_slot_fault(m, regs, error) or _optimizer().detour_fault(m, regs)
    ctl = stack[-1]
    point = ctl.point
    if point is None or not point.in_slot(regs.pc):
        return _boosted_slot_fault(m, regs, error) or _optimizer().detour_fault(m, regs)
    stack.pop()
    regs.pc = point.address
    _finish_step(m, ctl, regs)
    _done_with(m, point)
    m.emit("slot-fault", point.address, repr(error))
    if ctl.status is Status.HIT_SS:
        for probe in _live(point):
            if probe.fault_handler is not None:
                try:
                    probe.fault_handler(probe.data, regs, error)
                except Exception as err2:
                    _report_handler_failure(m, probe, "fault handler", err2)
    return point.address


def _boost_owner(m: ProbeManager, pc: int) -> ProbePoint | None:
    """The point whose boosted slot variant holds ``pc`` (a variant starts within
    ``slot_size`` bytes below it)."""
    for back in range(0, m.arch.slot_size, m.arch.insn_align):
        point = m.boost_owner.get(pc - back)
        if point is not None:
            return point if point.in_boost(pc) else None
    return None


def _boosted_slot_fault(m: ProbeManager, regs: PtRegs, error: BaseException) -> int | None:
    """A fault inside a boosted slot variant: put the PC back at the probed instruction,
    tell the fault handlers and return the probed address (``None``: not in one)."""
    point = _boost_owner(m, regs.pc)
    if point is None:
        return None
    regs.pc = point.address
    m.emit("slot-fault", point.address, repr(error))
    for probe in _live(point):
        if probe.fault_handler is not None:
            try:
                probe.fault_handler(probe.data, regs, error)
            except Exception as err2:
                m.emit("handler-fault", probe.address, f"fault handler: {err2!r}")
    return point.address


def check_registered(probe: Kprobe) -> None:
    """Raise ``NotRegistered`` unless ``probe`` is registered."""
    if not probe.registered:
        raise NotRegistered(f"probe at {probe.address:#x} is not registered")



def kprobe_abort(m: ProbeManager, depth: int = 0) -> int:
    """Reset the current CPU's probe state after a run that will not continue (a step
    limit, a guest fault, a handler's nested call that failed): drop the probes in
    progress above ``depth`` on the control block stack, as Linux's fault path resets the
    current kprobe, and release what they held (a retired point's slot is freed once no
    CPU uses it).  Without this a stale control block would make every later hit on this
    CPU look reentrant and be counted missed.  Returns how many probes were dropped."""
    stack = m.ctl_stack()
    dropped = 0
    while len(stack) > depth:
        ctl = stack.pop()
        dropped += 1
        if ctl.point is not None:
            m.emit("aborted", ctl.point.address, ctl.status.value)
            _done_with(m, ctl.point)
    return dropped
