"""Return probes: kretprobes and uretprobes by return-address hijacking.

Mirrors Linux ``kernel/trace/rethook.c`` and ``kernel/kprobes.c`` (``pre_handler_kretprobe``,
``kretprobe_trampoline_handler``).  A return probe is a kprobe at a function's entry whose
pre-handler takes an instance from the probe's pool of ``maxactive`` (or counts a miss in
``nmissed`` and leaves the return alone), runs the entry handler with the instance's own
copy of the data, saves the real return address and the frame, and points the return
address at the trampoline.  The instance goes on the current task's stack.

The trampoline is one breakpoint in executable memory, shared by every return probe of the
address space and kept for the manager's lifetime, so a pending return can never reach a
freed trampoline, even after its probe is unregistered (its handler then no longer runs;
the return still lands).  At the trampoline trap the host pops the task's instances:
instances of deeper frames than the returning one were skipped by a non-local exit and are
dropped; the instance of the returning frame runs its return handler with the real return
value in ``regs`` and execution resumes at the real return address.  When two return probes
hooked one call, the inner instance's saved address is the trampoline itself and the chain
is followed in one trap, as Linux does.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from kprobe_ref import bits
from kprobe_ref.errors import InvalidAddress, InvalidProbeDefinition, NotRegistered
from kprobe_ref.manager import (
    CtlBlock,
    ProbeManager,
    Status,
    attach_probe,
    call_handler,
    probe_address,
    run_event_callbacks,
    unregister_kprobe,
)
from kprobe_ref.point import ProbePointList
from kprobe_ref.probe import (
    EventCallback,
    EventCallbacks,
    Handler,
    Kprobe,
    KretprobeBuilder,
    ProbeData,
)
from kprobe_ref.ptregs import PtRegs
from kprobe_ref.state import ConcreteState

__all__ = [
    "DEFAULT_MAXACTIVE",
    "MAXACTIVE_LIMIT",
    "Kretprobe",
    "RethookTable",
    "RetprobeInstance",
    "reclaim_instances",
    "register_kretprobe",
    "unregister_kretprobe",
]

DEFAULT_MAXACTIVE = 10
"""Pool size when none is given (Linux: ``max(10, 2 * CPUs)``, one CPU here)."""
MAXACTIVE_LIMIT = 4096
"""Largest pool Linux accepts (``KRETPROBE_MAXACTIVE_MAX``)."""


@dataclass(eq=False)
class RetprobeInstance:
    """One hooked call in flight: whose probe, which task, where it really returns."""

    rp: Kretprobe
    task: int = 0
    ret_addr: int = 0
    frame: int = 0
    data: ProbeData = None


@dataclass(eq=False)
class Kretprobe:
    """A registered kretprobe or uretprobe: the handle ``register_kretprobe`` returns."""

    address: int
    entry_handler: Handler | None
    ret_handler: Handler | None
    data: ProbeData
    maxactive: int
    user_pid: int | None
    nmissed: int = 0
    """Calls not hooked because every instance was in use."""
    registered: bool = False
    kprobe: Kprobe | None = field(default=None, repr=False)
    free: list[RetprobeInstance] = field(default_factory=list, repr=False)
    callbacks: EventCallbacks = field(default_factory=EventCallbacks, repr=False)

    def register_event_callback(self, callback_id: int, callback: EventCallback) -> None:
        """Run ``callback(regs)`` at every hooked return, after the return handler, with
        the return registers; an id already in use has its callback replaced."""
        self.callbacks.register(callback_id, callback)

    def unregister_event_callback(self, callback_id: int) -> None:
        """Remove the event callback ``callback_id`` (``NotRegistered`` if none)."""
        self.callbacks.unregister(callback_id)

    def event_callbacks(self) -> list[EventCallback]:
        """The event callbacks in the order they run (ascending id)."""
        return self.callbacks.ordered()

    def has_event_callbacks(self) -> bool:
        """Whether any event callback is registered.  They run at the return trampoline,
        so the entry probe's step needs no end-of-step trap for them."""
        return bool(self.callbacks)

    def enable(self) -> None:
        """Enable the entry probe."""
        if self.kprobe is not None:
            self.kprobe.enable()

    def disable(self) -> None:
        """Disable the entry probe (calls in flight still return through the trampoline)."""
        if self.kprobe is not None:
            self.kprobe.disable()

    def is_enabled(self) -> bool:
        """Tell whether the entry probe is enabled."""
        return self.kprobe is not None and self.kprobe.is_enabled()

    @property
    def handler_errors(self) -> int:
        """Entry and return handler calls that raised (each also logged as a warning)."""
        return 0 if self.kprobe is None else self.kprobe.handler_errors


class RethookTable:
    """The return trampoline of one address space and its trap handler."""

    def __init__(self, m: ProbeManager) -> None:
        self.m = m
        size = max(len(m.arch.trampoline(m.user)), m.arch.insn_align)
        if m.pid is None:
            self.trampoline = m.aux.alloc_kernel_exec_memory(0, size)
        else:
            self.trampoline = m.aux.alloc_user_exec_memory(m.pid, 0, size)
        try:
            m.patch(self.trampoline, m.arch.trampoline(m.user))
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        """Free the trampoline (only when no return probe ever used it)."""
        if self.m.pid is None:
            self.m.aux.free_kernel_exec_memory(self.trampoline)
        else:
            self.m.aux.free_user_exec_memory(self.m.pid, self.trampoline)

    def _pop_returning(self, frame: int) -> RetprobeInstance | None:
        """Pop the instance of the returning frame, dropping deeper (skipped) ones."""
        while True:
            inst = self.m.aux.pop_kretprobe_instance_from_task()
            if inst is None:
                return None
            if bits.ult(inst.frame, frame):
                self.m.emit("return-dropped", inst.rp.address, f"frame {inst.frame:#x}")
                _recycle(inst)
                continue
            if inst.frame != frame:
                self.m.aux.insert_kretprobe_instance_to_task(inst)
                return None
            return inst

    def handle_trampoline(self, regs: PtRegs) -> bool:
        """Run the return handlers of the returning call and resume at its real return
        address.  ``False`` if the task has no instance for this frame."""
        frame = self.m.arch.return_frame(regs)
        chain: list[RetprobeInstance] = []
        while not chain or chain[-1].ret_addr == self.trampoline:
            inst = self._pop_returning(frame)
            if inst is None:
                if not chain:
                    return False
                break
            chain.append(inst)
        real = chain[-1].ret_addr
        try:
            for inst in chain:
                # Every handler sees the real return address, as rethook_trampoline_handler
                # sets it before running them.
                regs.pc = real
                self._run_return_handler(inst, regs)
        finally:
            for inst in chain:
                _recycle(inst)
        self.m.arch.rethook_return(regs, real)
        return True

    def _run_return_handler(self, inst: RetprobeInstance, regs: PtRegs) -> None:
        rp = inst.rp
        self.m.emit("return-fired", rp.address, f"to {inst.ret_addr:#x}")
        if not rp.registered or rp.kprobe is None:
            return
        if rp.ret_handler is None and not rp.callbacks:
            return
        stack = self.m.ctl_stack()
        stack.append(CtlBlock(None, Status.HIT_ACTIVE))
        try:
            if rp.ret_handler is not None:
                call_handler(self.m, rp.kprobe, rp.ret_handler, inst.data, regs,
                             "return handler")
            if rp.callbacks:
                run_event_callbacks(self.m, rp.kprobe, rp.callbacks.ordered(), regs)
        finally:
            stack.pop()


def _recycle(inst: RetprobeInstance) -> None:
    if inst.rp.registered:
        inst.data = None
        inst.rp.free.append(inst)


def _entry_handler(m: ProbeManager, rp: Kretprobe) -> Handler:
    """The entry kprobe's pre-handler: take an instance and hijack the return."""

    def pre(_data: ProbeData, regs: PtRegs) -> bool:
        assert m.rethooks is not None and rp.kprobe is not None
        if not rp.free:
            rp.nmissed += 1
            m.emit("return-missed", rp.address)
            return False
        inst = rp.free.pop()
        try:
            _hook_return(m, rp, inst, regs)
        except BaseException:
            _recycle(inst)
            raise
        return False

    return pre


def _hook_return(m: ProbeManager, rp: Kretprobe, inst: RetprobeInstance, regs: PtRegs) -> None:
    """Run the entry handler with the instance's data and, unless it declines, hijack the
    return address and push the instance on the task's stack."""
    assert m.rethooks is not None and rp.kprobe is not None
    inst.data = copy.deepcopy(rp.data)
    if rp.entry_handler is not None and call_handler(
        m, rp.kprobe, rp.entry_handler, inst.data, regs, "entry handler"
    ):
        _recycle(inst)
        return
    state = ConcreteState(regs, m.aux, m.pid, rp.address)
    real, frame = m.arch.rethook_prepare(state, m.rethooks.trampoline)
    real, frame = bits.concrete(real, "a return address"), bits.concrete(frame, "a frame")
    inst.ret_addr, inst.frame, inst.task = real, frame, m.aux.current_task()
    m.aux.insert_kretprobe_instance_to_task(inst)


def reclaim_instances(m: ProbeManager, instances: list[RetprobeInstance]) -> None:
    """Return the instances of frames that will never return (their run aborted: a guest
    fault, a step limit) to their probes' free lists, as Linux recycles a dead task's
    instances, so later calls are hooked instead of counted missed."""
    for inst in instances:
        m.emit("return-dropped", inst.rp.address, f"frame {inst.frame:#x} unwound")
        _recycle(inst)


def _validate(m: ProbeManager, builder: KretprobeBuilder) -> tuple[int, int]:
    if not isinstance(builder, KretprobeBuilder):
        raise InvalidProbeDefinition(f"expected a KretprobeBuilder, got {type(builder).__name__}")
    if (m.pid is None) != (builder.user_pid is None) or (
        m.pid is not None and m.pid != builder.user_pid
    ):
        raise InvalidProbeDefinition(
            "a uretprobe needs with_user_mode(pid) and that process's tables; a kretprobe "
            "neither"
        )
    n = DEFAULT_MAXACTIVE if builder.maxactive is None else builder.maxactive
    if not isinstance(n, int) or not 1 <= n <= MAXACTIVE_LIMIT:
        raise InvalidProbeDefinition(f"maxactive must be 1..{MAXACTIVE_LIMIT}, got {n!r}")
    addr = probe_address(m, builder.as_probe())
    func = m.aux.function_containing(addr, m.pid)
    if func is not None and func[0] != addr:
        raise InvalidAddress(
            f"{addr:#x} is not a function entry (it lies in the function at {func[0]:#x})"
        )
    return addr, n


def register_kretprobe(
    m: ProbeManager, points: ProbePointList, builder: KretprobeBuilder
) -> Kretprobe:
    """Register a return probe at a function entry and return its handle."""
    addr, n = _validate(m, builder)
    rp = Kretprobe(addr, builder.entry_handler, builder.ret_handler, builder.data, n,
                   builder.user_pid)
    rp.free = [RetprobeInstance(rp) for _ in range(n)]
    for callback_id, callback in builder.event_callbacks:
        rp.register_event_callback(callback_id, callback)
    created = m.rethooks is None
    if m.rethooks is None:
        m.rethooks = RethookTable(m)
    kp = Kprobe(addr, _entry_handler(m, rp), None, None, None, builder.user_pid)
    rp.kprobe = kp
    try:
        attach_probe(m, points, addr, kp)
    except BaseException:
        if created and m.rethooks is not None:
            m.rethooks.release()
            m.rethooks = None
        raise
    rp.registered = True
    return rp


def unregister_kretprobe(m: ProbeManager, points: ProbePointList, rp: Kretprobe) -> None:
    """Remove a return probe.  Calls in flight still return through the trampoline to
    their real return addresses; their return handlers no longer run."""
    if not rp.registered or rp.kprobe is None:
        raise NotRegistered(f"return probe at {rp.address:#x} is not registered")
    unregister_kprobe(m, points, rp.kprobe)
    rp.registered = False
    rp.free.clear()
