"""Several CPUs over one kernel address space.

A :class:`~kprobe_ref.sim.Machine` built with ``cpus=N`` has N CPUs.  They share the
kernel's memory, its probe tables and its out-of-line slots; each has its own registers, its
own per-CPU probe state (the manager's control-block stack, Linux's ``current_kprobe`` and
``kprobe_ctlblk``) and runs one *task* at a time.  A task is a call in progress: its
registers, its stack and its stack of return-probe instances (Linux keeps these on the
``task_struct``).  The emulated backend is a single CPU model; a CPU's turn restores its
task's register context into it, executes instructions and saves the context again, so the
interleaving is exact at instruction granularity.

The schedule is the caller's: :meth:`Smp.step` runs one CPU for up to ``n`` instructions, a
breakpoint trap and its handlers counting as the instruction that trapped.  A task may
:meth:`migrate <Smp.migrate>` to an idle CPU at a schedule point, except while its CPU has a
probe in progress (between a breakpoint and the end of its out-of-line step the kernel runs
with preemption disabled, so the per-CPU state can never belong to another CPU's task).

Instruction fetch and live patching follow :mod:`kprobe_ref.sim.patching`: each CPU latches
the first bytes of its next instruction when it arrives there, and keeps them until a
serialising event; a store another CPU makes meanwhile is seen only in the bytes after the
latched ones.  Memory the engine frees (slots, trampolines) is reused only after a grace
period (:class:`GracePeriods`, Linux's RCU-tasks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kprobe_ref.errors import KprobeError
from kprobe_ref.kretprobe import RetprobeInstance
from kprobe_ref.sim.cpu import StopKind
from kprobe_ref.sim.errors import GuestFault, MachineError
from kprobe_ref.sim.patching import Patcher

if TYPE_CHECKING:
    from kprobe_ref.sim.machine import Machine

__all__ = ["GracePeriods", "ReuseWhileInside", "Smp", "Task"]

TASK_STACKS = 0x6000_0000
"""Base of the task stacks (one per task in flight, reused when a task ends)."""
TASK_STACK_SIZE = 0x1_0000
TASK_STACK_STRIDE = 0x2_0000  # an unmapped guard region between two stacks


class ReuseWhileInside(MachineError):
    """Executable memory was handed out again while a CPU or task was still inside it."""


@dataclass
class Task:
    """A call in progress: the schedulable unit that migrates between CPUs."""

    tid: int
    stack: int
    pc: int
    context: object
    instances: list[RetprobeInstance] = field(default_factory=list)
    result: int | None = None
    finished: bool = False


@dataclass
class CpuState:
    """One CPU: the task it runs and its instruction-fetch latch."""

    index: int
    task: Task | None = None
    last: Task | None = None
    latch: tuple[int, bytes] | None = None
    steps: int = 0


class GracePeriods:
    """Deferred reuse of memory the probe engine frees (Linux's ``call_rcu_tasks`` and
    ``synchronize_rcu_tasks``).

    A callback queued by :meth:`defer` runs once every task that was in flight when it was
    queued has passed a quiescent point: it ended, or it was seen at a schedule point with
    its CPU holding no probe in progress and its PC outside every region still waiting to
    be freed.  With no task in flight the callback runs at once (a machine with one CPU and
    synchronous calls has no reader to wait for).  ``enabled = False`` frees at once, which
    is the bug the invariant check in :meth:`Smp.check_unoccupied` exists to catch."""

    def __init__(self, smp: Smp) -> None:
        self.smp = smp
        self.enabled = True
        self.pending: list[tuple[set[int], int, Callable[[], None]]] = []
        self.completed = 0

    def defer(self, addr: int, callback: Callable[[], None]) -> None:
        """Run ``callback`` (which frees the region at ``addr``) after a grace period."""
        waiting = {t.tid for t in self.smp.live_tasks()}
        if not self.enabled or not waiting:
            callback()
            return
        self.pending.append((waiting, addr, callback))

    def waiting_regions(self) -> set[int]:
        """Addresses of regions whose free is still pending."""
        return {addr for _, addr, _ in self.pending}

    def observe(self, task: Task, quiescent: bool) -> None:
        """Record that ``task`` was seen at a schedule point (quiescent or not) and run the
        callbacks whose grace period has ended."""
        if quiescent:
            for waiting, _, _ in self.pending:
                waiting.discard(task.tid)
        ready = [p for p in self.pending if not p[0]]
        self.pending = [p for p in self.pending if p[0]]
        for _, _, callback in ready:
            callback()
            self.completed += 1


class Smp:
    """The CPUs of a machine and their schedule points."""

    def __init__(self, machine: Machine, cpus: int) -> None:
        if not isinstance(cpus, int) or isinstance(cpus, bool) or cpus < 1:
            raise KprobeError(f"cpus must be a positive integer, not {cpus!r}")
        self.m = machine
        self.cpus = [CpuState(i) for i in range(cpus)]
        self.current = 0
        self.running: Task | None = None
        self.patching = Patcher(machine, self)
        self.grace = GracePeriods(self)
        self._next_tid = 1
        self._free_stacks: list[int] = []
        self._stack_count = 0

    # -- tasks ---------------------------------------------------------------------------------
    def cpu(self, index: int) -> CpuState:
        """The CPU ``index``; a bad index is a ``KprobeError``."""
        if not isinstance(index, int) or isinstance(index, bool) \
                or not 0 <= index < len(self.cpus):
            raise KprobeError(f"no CPU {index!r} (the machine has {len(self.cpus)})")
        return self.cpus[index]

    def pc(self, index: int) -> int | None:
        """The PC of the task on CPU ``index`` (``None`` when the CPU is idle)."""
        task = self.cpu(index).task
        return None if task is None else task.pc

    def live_tasks(self) -> list[Task]:
        """Tasks in flight, on a CPU or waiting to migrate."""
        return [c.task for c in self.cpus if c.task is not None]

    def _new_stack(self) -> int:
        if self._free_stacks:
            return self._free_stacks.pop()
        base = TASK_STACKS + self._stack_count * TASK_STACK_STRIDE
        self._stack_count += 1
        self.m.kernel.map(base, TASK_STACK_SIZE, "rw")
        return base

    def start(self, index: int, addr: int, args: tuple[int, ...]) -> Task:
        """Begin a call of ``addr`` on CPU ``index`` (which must be idle) without running
        it."""
        cpu = self.cpu(index)
        if cpu.task is not None:
            raise KprobeError(f"CPU {index} is running a call that has not returned")
        regs_class = self.m.arch.regs_class
        if len(args) > len(regs_class.ARGS):
            raise KprobeError(f"at most {len(regs_class.ARGS)} integer arguments")
        backend = self.m.kernel.cpu
        outer = backend.save_context()
        try:
            stack = self._new_stack()
            sp = self.m.prepare_call(self.m.kernel, stack + TASK_STACK_SIZE - 0x100, args)
            task = Task(self._next_tid, stack, addr, backend.save_context())
            assert sp
        finally:
            backend.restore_context(outer)
        self._next_tid += 1
        cpu.task, cpu.last, cpu.latch = task, task, None
        self._latch(cpu)
        return task

    def done(self, index: int) -> bool:
        """Whether the last call started on (or migrated to) CPU ``index`` has returned."""
        cpu = self.cpu(index)
        return cpu.task is None and cpu.last is not None and cpu.last.finished

    def result(self, index: int) -> int:
        """The return value of the finished call on CPU ``index``."""
        cpu = self.cpu(index)
        if not self.done(index) or cpu.last is None or cpu.last.result is None:
            raise KprobeError(f"CPU {index} has no finished call")
        return cpu.last.result

    def migrate(self, src: int, dst: int) -> None:
        """Move the task on CPU ``src`` to the idle CPU ``dst`` (a schedule point)."""
        a, b = self.cpu(src), self.cpu(dst)
        if a.task is None:
            raise KprobeError(f"CPU {src} runs no task to migrate")
        if b.task is not None:
            raise KprobeError(f"CPU {dst} is busy")
        if self.m.manager._ctl.get(src):
            raise KprobeError(f"CPU {src} has a probe in progress (preemption is disabled)")
        task = a.task
        a.task, a.latch = None, None
        b.task, b.last, b.latch = task, task, None
        self._latch(b)
        self.grace.observe(task, self._quiescent(b))

    # -- running -------------------------------------------------------------------------------
    def step(self, index: int, n: int = 1) -> int:
        """Run up to ``n`` instructions of CPU ``index``'s task; returns how many ran (a
        trap and its handlers count as the trapping instruction)."""
        cpu = self.cpu(index)
        ran = 0
        while ran < n and cpu.task is not None:
            self._step_one(cpu)
            ran += 1
        return ran

    def _step_one(self, cpu: CpuState) -> None:
        task = cpu.task
        assert task is not None
        m = self.m
        space = m.kernel
        backend = space.cpu
        outer_cpu, outer_task, outer_current = self.current, self.running, m._current
        outer_ctx = backend.save_context()
        self.current, self.running, m._current = cpu.index, task, space
        m._depth += 1
        try:
            backend.restore_context(task.context)
            try:
                task.pc = self._execute(cpu, task)
            except MachineError:
                self._finish(cpu, task, None)
                raise
            if task.pc == m.return_stop:
                ret = m.arch.cpu_regs[m.arch.regs_class.RET[0]]
                self._finish(cpu, task, backend.reg_read(ret))
                return
            task.context = backend.save_context()
            cpu.steps += 1
            self._latch(cpu)
            self.grace.observe(task, self._quiescent(cpu))
        finally:
            m._depth -= 1
            self.current, self.running, m._current = outer_cpu, outer_task, outer_current
            backend.restore_context(outer_ctx)

    def _execute(self, cpu: CpuState, task: Task) -> int:
        """Execute one instruction (as this CPU fetches it) and deliver its trap; returns
        the next PC."""
        m = self.m
        space = m.kernel
        if task.pc in m.host_calls:
            return m._host_call(space)
        if task.pc in m.manager.opt_entries:
            return m._deliver_host_call(space, task.pc)
        with self.patching.fetch(cpu, task.pc):
            stop = space.cpu.run(task.pc, frozenset({m.return_stop}), 1)
        if stop.kind in (StopKind.STOP_AT, StopKind.STEP_LIMIT):
            return stop.pc
        if stop.kind is StopKind.BREAK:
            poked = self.patching.poke_handler(stop.pc)
            if poked is not None:
                return poked
            try:
                return m._deliver_break(space, stop)
            except GuestFault:
                again = self.patching.stale_breakpoint(stop.pc)
                if again is None:
                    raise
                return again
        m._deliver_fault(space, stop)
        raise AssertionError("unreachable: a fault always raises")

    def _finish(self, cpu: CpuState, task: Task, result: int | None) -> None:
        task.finished, task.result = True, result
        cpu.task, cpu.latch = None, None
        self._free_stacks.append(task.stack)
        self.grace.observe(task, True)

    def _latch(self, cpu: CpuState) -> None:
        if cpu.task is not None:
            cpu.latch = self.patching.prefetch(cpu.task.pc)

    def _quiescent(self, cpu: CpuState) -> bool:
        """RCU-tasks' quiescent point: no probe in progress on the CPU and the PC outside
        every region waiting to be freed (and outside the slots and trampolines)."""
        if cpu.task is None:
            return True
        if self.m.manager._ctl.get(cpu.index):
            return False
        pc = cpu.task.pc
        return self.m.kernel.area_of(pc) is None

    # -- invariants ----------------------------------------------------------------------------
    def check_unoccupied(self, addr: int, size: int) -> None:
        """Raise ``ReuseWhileInside`` when a task's PC (or a CPU's probe in progress) lies
        in ``[addr, addr + size)``: memory is being handed out again while still in use."""
        for cpu in self.cpus:
            task = cpu.task
            if task is not None and addr <= task.pc < addr + size:
                raise ReuseWhileInside(task.pc, f"executable memory at {addr:#x} handed out "
                                       f"while CPU {cpu.index} executes inside it")
            for ctl in self.m.manager._ctl.get(cpu.index, []):
                slot = None if ctl.point is None else ctl.point.slot_addr
                if slot is not None and addr <= slot < addr + size:
                    raise ReuseWhileInside(slot, f"slot at {slot:#x} handed out while CPU "
                                           f"{cpu.index} has a step in it")

    def instances(self) -> list[RetprobeInstance] | None:
        """The running task's return-probe instances (``None`` outside a task)."""
        return None if self.running is None else self.running.instances
