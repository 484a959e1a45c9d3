"""The simulated host: :class:`Machine`.

A ``Machine`` is what a kernel is to the probe engine.  It implements
:class:`~kprobe_ref.host.KprobeAuxiliaryOps`, owns a CPU backend per address space (the
kernel, and one per spawned process), loads static ELF images, calls functions with the C
calling convention, and delivers traps to the engine's entry points.

Trap delivery: the CPU stops at a breakpoint, the machine builds the ``pt_regs`` frame,
calls ``kprobe_handler_from_break`` then ``kprobe_handler_from_debug`` (the ``uprobe_*``
ones in a process), writes the frame back and resumes.  Handlers are Python and may call
back into emulated code (:meth:`Machine.call`): the interrupted CPU context is saved, the
nested call runs on a stack of its own (never below the interrupted stack pointer: x86_64
code may keep live data in the red zone), and the context is restored afterwards.

Memory layout of each address space (page-aligned): the image where it was linked, in
either half of the address space, virtual address 0 included; the machine's own pages, placed
on first use (the first load, hand mapping, host access, call or run) where nothing is
mapped: a page at :data:`RETURN_STOP` that calls return to (the run stops before executing
it) and stacks below :data:`STACK_TOP` when those are free, else the lowest free room; memory
from
:meth:`Machine.alloc` from :data:`HEAP_BASE`; executable slot areas placed near the code
they serve (kernel) or at :data:`USER_XOL_BASE` (a process's, as Linux's XOL area lies far
from the text).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

from kprobe_ref.arch import ArchOps, get_arch
from kprobe_ref.arch.base import NO_REACH, SlotReach, reach_window
from kprobe_ref.errors import (
    KprobeError,
    NoSuchProcess,
    OutOfReach,
    SimulatedFault,
)
from kprobe_ref.ftrace import KprobeFtrace, ftrace_regs_call, site_return
from kprobe_ref.kernel.blacklist import Blacklist, kernel_blacklist
from kprobe_ref.kernel.elfscan import KernelElf
from kprobe_ref.kernel.extable import ExceptionTable, exception_table
from kprobe_ref.kernel.ftrace import FtraceTable, boot_convert
from kprobe_ref.kretprobe import RetprobeInstance, reclaim_instances
from kprobe_ref.manager import (
    ProbeManager,
    collect_slot_garbage,
    kprobe_abort,
    kprobe_fault_handler,
    kprobe_handler_from_break,
    kprobe_handler_from_debug,
)
from kprobe_ref.optimize import optimized_callback, retry_deferred
from kprobe_ref.point import ProbePointList
from kprobe_ref.ptregs import PtRegs
from kprobe_ref.sim.cpu import Cpu, Stop, StopKind
from kprobe_ref.sim.elf import Image, load_image, read_image
from kprobe_ref.sim.errors import GuestFault, StepLimitExceeded
from kprobe_ref.sim.frame import FrameLayout, is_read, trap_frame, write_back
from kprobe_ref.sim.smp import Smp
from kprobe_ref.sim.space import PAGE, AddressSpace, page_up

__all__ = ["DEFAULT_MAX_STEPS", "Machine", "Process"]

RETURN_STOP = 0x1000
STACK_TOP = 0x7FF0_0000
STACK_SIZE = 0x10_0000
NESTED_STACKS = 8
HEAP_BASE = 0x2000_0000
USER_XOL_BASE = 0x7FFF_0000_0000
KERNEL_EXEC_HINT = 0x3000_0000
"""Where kernel executable memory that belongs to no code (trampolines) is sought first."""
DEFAULT_MAX_STEPS = 50_000_000
_MASK = (1 << 64) - 1


def make_cpu(isa: str, cpu: str) -> Cpu:
    """Create a CPU backend: ``"unicorn"`` or ``"pcode"``."""
    if cpu == "unicorn":
        from kprobe_ref.sim.unicorn_cpu import UnicornCpu

        return UnicornCpu(isa)
    if cpu == "pcode":
        from kprobe_ref.sim.pcode import PcodeCpu

        return PcodeCpu(isa)
    raise KprobeError(f"unknown CPU backend {cpu!r} (unicorn or pcode)")


def image_exception_table(path: str | Path) -> ExceptionTable:
    """The exception table of the ELF image at ``path``."""
    kelf = KernelElf(path)
    try:
        return exception_table(kelf)
    finally:
        kelf.close()


class Process:
    """A user process: its own address space and its own uprobe tables."""

    def __init__(self, pid: int, space: AddressSpace, manager: ProbeManager,
                 image: Image) -> None:
        self.pid = pid
        self.space = space
        self.manager = manager
        self.points = ProbePointList()
        self.image = image


class Machine:
    """A simulated computer with ``cpus`` CPUs (:mod:`kprobe_ref.sim.smp`), a kernel
    address space and user processes."""

    def __init__(self, isa: str, cpu: str | None = None, strict: bool = False,
                 cpus: int = 1) -> None:
        """``strict``: a probe handler's exception propagates out of the run (after the
        probe state is cleaned up) instead of being logged and absorbed.  ``cpus``: how many
        CPUs share the kernel address space (``m.call`` runs on CPU 0)."""
        self.isa = isa
        self.arch: ArchOps = get_arch(isa)
        self.cpu_kind = cpu or ("pcode" if isa == "loongarch64" else "unicorn")
        self._layout = FrameLayout(self.arch.regs_class, self.arch.cpu_regs)
        self._loaders: dict[Cpu, Callable[[], Sequence[int]]] = {}
        """Each CPU's batched read of a trap frame's registers, made once."""
        self.kernel = self._new_space(None)
        self.kprobe_blacklist: Blacklist | None = None
        self.exception_table = ExceptionTable()
        """The exception tables of the loaded kernel images."""
        """The loaded kernel's kprobe blacklist (``None``: no kernel image loaded)."""
        self.manager = ProbeManager(self.arch, self, None)
        self.manager.strict = strict
        self.points = ProbePointList()
        self.processes: dict[int, Process] = {}
        self.trap_count = 0
        self.optimized_hits = 0
        """Optimized probe hits delivered at detour host-call sites (no trap)."""
        self.instructions = 0
        """Instructions the CPUs have executed, in every address space (a clock: tracing
        timestamps count one nanosecond per instruction)."""
        self._next_pid = 100
        self._heap = HEAP_BASE
        self._current: AddressSpace = self.kernel
        self._depth = 0
        self._active: list[AddressSpace] = []
        self._preempted: list[tuple[AddressSpace, int]] = []
        """(address space, PC) of every context a nested call has set aside."""
        self.images: list[Image] = []
        self.smp = Smp(self, cpus)
        self.ftrace: FtraceTable | None = None
        """The loaded kernel's ftrace sites after the boot conversion (``None``: no kernel
        image with an ``__mcount_loc`` table loaded)."""
        self.ftrace_calls = 0
        """Calls of the ftrace trampoline (kprobes on ftrace sites): never traps."""
        self.host_calls: frozenset[int] = frozenset()
        """Addresses the machine intercepts as calls into the host (the ftrace
        trampoline): a run stops there and the host does the trampoline's work."""

    # -- set-up ------------------------------------------------------------------------------
    def _new_space(self, pid: int | None) -> AddressSpace:
        return AddressSpace(make_cpu(self.isa, self.cpu_kind), pid)

    def _machine_pages(self, space: AddressSpace) -> None:
        """Place the machine's own pages (return stop, call stacks) on first use, where
        nothing is mapped: at :data:`RETURN_STOP` and below :data:`STACK_TOP` when those are
        free, else at the lowest free place (a kernel may load a segment at address 0)."""
        if space.return_stop is None:
            stop = RETURN_STOP if space.is_free(RETURN_STOP, PAGE) else space.find_free(
                PAGE, 1 << 47, PAGE)
            if stop is None:
                raise KprobeError(f"no free page for the return stop in {space.where()}")
            space.map(stop, PAGE, "rx")
            bp = self.arch.step_breakpoint(space.pid is not None)
            space.cpu.mem_write(stop, bp * (PAGE // len(bp)))
            space.reserve(stop, PAGE, "the return-stop page of the machine")
            space.return_stop = stop
        if space.stack_top is None:
            span = 2 * STACK_SIZE * NESTED_STACKS
            low = STACK_TOP - span + STACK_SIZE
            base = low if space.is_free(low, span) else space.find_free(PAGE, 1 << 47, span)
            if base is None:
                raise KprobeError(f"no free room for call stacks in {space.where()}")
            top = base + span - STACK_SIZE
            for level in range(NESTED_STACKS):
                level_top = top - level * 2 * STACK_SIZE
                space.map(level_top - STACK_SIZE, STACK_SIZE, "rw")
            space.stack_top = top

    @property
    def return_stop(self) -> int:
        """Where kernel calls return to: the kernel space's return-stop page."""
        self._machine_pages(self.kernel)
        assert self.kernel.return_stop is not None
        return self.kernel.return_stop

    @property
    def cpu(self) -> Cpu:
        """The kernel address space's CPU backend."""
        return self.kernel.cpu

    def load_elf(self, path: str | Path) -> Image:
        """Load a static ELF image into kernel memory and record its functions."""
        image = read_image(path, self.isa)
        load_image(self.kernel, image)
        self._machine_pages(self.kernel)
        self.images.append(image)
        if "_stext" in image.symbols and "_etext" in image.symbols:
            self.kprobe_blacklist = kernel_blacklist(path)
            self._ftrace_init(image)
        self.exception_table.extend(image_exception_table(path))
        return image

    def _ftrace_init(self, image: Image) -> None:
        """Apply ftrace's boot conversion to a kernel image (:mod:`kprobe_ref.kernel.ftrace`)
        and, where the kernel has kprobes on ftrace, let the engine use its sites."""
        table = boot_convert(self.isa, image.symbols, self.read, self.write)
        if table is None:
            return
        self.ftrace = table
        image.ftrace_sites = table.addresses
        if table.abi.kprobes_on_ftrace and table.sites:
            self._ftrace_trampoline()  # part of the kernel, as ftrace_regs_caller is
            self.manager.ftrace = KprobeFtrace(table, self._ftrace_trampoline)

    def _ftrace_trampoline(self) -> int:
        """The ftrace trampoline the sites call, placed near the text when the kernel is
        loaded (so asking whether a site can be probed changes nothing): breakpoints the
        CPU never executes, since a run stops at its address and the host does the
        trampoline's work (:meth:`_host_call`)."""
        if self.host_calls:
            return min(self.host_calls)
        assert self.ftrace is not None
        self._machine_pages(self.kernel)
        reach = (1 << 31) - PAGE  # a call rel32 or auipc/jalr from every site
        lo = max(PAGE, max(self.ftrace.sites) - reach)
        hi = min(1 << 64, min(self.ftrace.sites) + reach)
        addr = self._place(self.kernel, min(self.ftrace.sites), (lo, hi), self.arch.slot_size,
                           NO_REACH, "the ftrace trampoline")
        bp = self.arch.step_breakpoint(False)
        self.kernel.write(addr, bp * (self.arch.slot_size // len(bp)), enforce=False)
        self.host_calls = frozenset({addr})
        return addr

    def _lazy_frame(self, cpu: Cpu, pc: int) -> PtRegs:
        """A frame of ``cpu``'s registers with PC ``pc``, read on first use
        (:mod:`kprobe_ref.sim.frame`) through the CPU's one batched loader."""
        loader = self._loaders.get(cpu)
        if loader is None:
            layout = self._layout
            loader = self._loaders[cpu] = partial(cpu.reg_read_many, layout.cpu_names)
        return trap_frame(self._layout, pc, loader)

    def _host_call(self, space: AddressSpace) -> int:
        """The CPU has reached the ftrace trampoline: run it on the CPU's registers and
        return where the CPU continues.  No trap is counted: this is a call."""
        cpu, layout, manager = space.cpu, self._layout, self._manager(space)
        assert manager.ftrace is not None
        sp_name = self.arch.cpu_regs[self.arch.regs_class.SP]
        link = manager.ftrace.abi.link
        sp = cpu.reg_read(sp_name)
        ret, site_sp = site_return(manager, sp, cpu.reg_read(self.arch.cpu_regs[link])
                                   if link is not None else 0)
        if site_sp != sp:
            cpu.reg_write(sp_name, site_sp)
        regs = self._lazy_frame(cpu, ret)
        self.ftrace_calls += 1
        try:
            ftrace_regs_call(manager, regs)
        except SimulatedFault as exc:
            raise GuestFault(exc.address, exc.detail, exc.fault_addr) from None
        if is_read(regs):
            regs.sp = site_sp  # the trampoline never restores a handler's stack pointer
        write_back(layout, regs, cpu.reg_write_many)
        return regs.pc

    def add_symbol(self, name: str, addr: int, size: int) -> None:
        """Describe hand-mapped kernel code as a function."""
        self.kernel.add_function(name, addr, size)

    def map(self, addr: int, size: int, perms: str = "rx") -> None:
        """Map zeroed kernel memory with the given permissions."""
        self.kernel.map(addr, size, perms)
        self._machine_pages(self.kernel)

    def alloc(self, size: int) -> int:
        """Allocate zeroed read-write kernel memory; returns its address."""
        self._machine_pages(self.kernel)
        addr = self.kernel.find_free(self._heap, 1 << 47, size)
        if addr is None:
            raise KprobeError(f"no free room for {size:#x} bytes of kernel memory")
        self.kernel.map(addr, size, "rw")
        self._heap = page_up(addr + size) + PAGE
        return addr

    def write(self, addr: int, data: bytes) -> None:
        """Write kernel memory as the host, ignoring page permissions."""
        self._machine_pages(self.kernel)
        self.kernel.write(addr, data, enforce=False)

    def read(self, addr: int, n: int) -> bytes:
        """Read kernel memory as the host."""
        self._machine_pages(self.kernel)
        return self.kernel.read(addr, n)

    # -- processes -----------------------------------------------------------------------------
    def spawn(self, path: str | Path, xol_base: int = USER_XOL_BASE) -> int:
        """Create a user process from a static ELF image; returns its pid.  ``xol_base`` is
        where its out-of-line slot area goes (far from the text by default)."""
        image = read_image(path, self.isa)
        pid = self._next_pid
        space = self._new_space(pid)
        load_image(space, image)
        self._machine_pages(space)
        space.xol_base = xol_base
        self._next_pid += 1
        manager = ProbeManager(self.arch, self, pid)
        manager.strict = self.manager.strict
        self.processes[pid] = Process(pid, space, manager, image)
        return pid

    def process(self, pid: int) -> Process:
        """The process ``pid``; an unknown pid is a ``NoSuchProcess`` error."""
        try:
            return self.processes[pid]
        except (KeyError, TypeError):
            raise NoSuchProcess(f"no process with pid {pid!r}") from None

    def _space(self, pid: int | None) -> AddressSpace:
        return self.kernel if pid is None else self.process(pid).space

    def _manager(self, space: AddressSpace) -> ProbeManager:
        return self.manager if space.pid is None else self.process(space.pid).manager

    # -- registers -----------------------------------------------------------------------------
    def _read_regs(self, space: AddressSpace) -> PtRegs:
        regs = self.arch.regs_class()
        self._layout.fill(regs, space.cpu.reg_read_many(self._layout.cpu_names))
        return regs

    def _write_regs(self, space: AddressSpace, regs: PtRegs) -> None:
        layout = self._layout
        space.cpu.reg_write_many(list(zip(layout.cpu_names, layout.values(regs), strict=True)))

    def regs(self) -> PtRegs:
        """The kernel CPU's registers as a ``pt_regs`` frame."""
        return self._read_regs(self.kernel)

    def set_regs(self, regs: PtRegs) -> None:
        """Load a ``pt_regs`` frame into the kernel CPU."""
        self._machine_pages(self.kernel)
        self._write_regs(self.kernel, regs)

    # -- running ---------------------------------------------------------------------------------
    def run(self, pc: int, stop_at: set[int] | frozenset[int] = frozenset(),
            max_steps: int = DEFAULT_MAX_STEPS) -> int:
        """Run kernel code from ``pc`` until the PC is in ``stop_at`` (checked before each
        instruction); returns that PC.  Traps are delivered on the way."""
        self._machine_pages(self.kernel)
        try:
            return self._run(self.kernel, pc, frozenset(stop_at), max_steps)
        finally:
            if self._depth == 0:
                self._quiesce(self.kernel)

    def _run(self, space: AddressSpace, pc: int, stop_at: frozenset[int], max_steps: int) -> int:
        outer = self._current
        self._current = space
        mark = self._run_mark(space)
        space.abandoned_pc = None
        self._active.append(space)
        try:
            return self._run_loop(space, pc, stop_at, max_steps)
        except BaseException:
            self._abort_run(space, mark)
            raise
        finally:
            self._active.pop()
            self._current = outer

    def _run_loop(self, space: AddressSpace, pc: int, stop_at: frozenset[int],
                  max_steps: int) -> int:
        steps = 0
        manager = self._manager(space)
        while True:
            calls = self.host_calls if space is self.kernel else frozenset()
            entries = manager.opt_entries
            stops = stop_at | calls if calls else stop_at
            stops = stops.union(entries) if entries else stops
            stop = space.cpu.run(pc, stops, max_steps - steps)
            steps += stop.steps
            self.instructions += stop.steps
            kind = stop.kind
            if kind is StopKind.BREAK:
                pc = self._deliver_break(space, stop)
            elif kind is StopKind.STOP_AT:
                if stop.pc in stop_at:
                    return stop.pc
                if stop.pc in calls:
                    pc = self._host_call(space)
                else:
                    pc = self._deliver_host_call(space, stop.pc)
            elif kind is StopKind.STEP_LIMIT:
                raise StepLimitExceeded(stop.pc, max_steps)
            else:
                self._deliver_fault(space, stop)

    def _run_mark(self, space: AddressSpace) -> tuple[int, int]:
        """The probe state a run of ``space`` starts from: the depth of the CPU's control
        block stack and of the task's return-probe instances.  The outermost run of a space
        starts from nothing: whatever an earlier run left is abandoned with this one."""
        if space not in self._active:
            return 0, 0
        return len(self._manager(space).ctl_stack()), len(space.instances)

    def _abort_run(self, space: AddressSpace, mark: tuple[int, int]) -> None:
        """A run ended by an exception will never continue: reset the CPU's probe state to
        where the run began and give the instances of its unwound frames back to their
        probes' pools."""
        manager = self._manager(space)
        kprobe_abort(manager, mark[0])
        unwound = space.instances[mark[1]:]
        del space.instances[mark[1]:]
        reclaim_instances(manager, unwound)
        space.abandoned_pc = self._pc_of(space)
        collect_slot_garbage(manager)

    def _deliver_break(self, space: AddressSpace, stop: Stop) -> int:
        """Hand a breakpoint trap to the engine on a lazily synchronised frame
        (:mod:`kprobe_ref.sim.frame`); return where the CPU resumes."""
        cpu, layout = space.cpu, self._layout
        regs = self._lazy_frame(cpu, self.arch.trap_pc(stop.pc))
        self.trap_count += 1
        if not self._dispatch_break(space, regs):
            raise GuestFault(stop.pc, f"breakpoint not placed by a probe ({stop.detail})")
        write_back(layout, regs, cpu.reg_write_many)
        return regs.pc

    def _deliver_host_call(self, space: AddressSpace, pc: int) -> int:
        """The CPU reached an optimized probe's detour (its host-call site, where Linux's
        template code calls ``optimized_callback``): run the hit on a lazily synchronised
        frame of the CPU's registers, as a trap's, but with no trap; return where the CPU
        resumes."""
        cpu, layout = space.cpu, self._layout
        regs = self._lazy_frame(cpu, pc)
        self.optimized_hits += 1
        if not optimized_callback(self._manager(space), regs):
            raise GuestFault(pc, "host-call site with no optimized probe")
        write_back(layout, regs, cpu.reg_write_many)
        return regs.pc

    def _dispatch_break(self, space: AddressSpace, regs: PtRegs) -> bool:
        """Call the engine's break and end-of-step entry points; ``True`` when one of them
        handled the trap."""
        manager = self._manager(space)
        try:
            return kprobe_handler_from_break(manager, regs) or kprobe_handler_from_debug(
                manager, regs
            )
        except SimulatedFault as exc:
            raise GuestFault(exc.address, exc.detail, exc.fault_addr) from None

    def _deliver_fault(self, space: AddressSpace, stop: Stop) -> None:
        regs = self._read_regs(space)
        regs.pc = stop.pc
        error = GuestFault(stop.pc, stop.detail or stop.kind.value, stop.fault_addr)
        probed = kprobe_fault_handler(self._manager(space), regs, error)
        if probed is not None:
            self._write_regs(space, regs)
            raise GuestFault(probed, f"in the out-of-line slot: {error.detail}",
                             stop.fault_addr)
        raise error

    def call(self, addr: int, *args: int, max_steps: int = DEFAULT_MAX_STEPS) -> int:
        """Call kernel code at ``addr`` with the C calling convention; returns the first
        return register.  From inside a handler, the interrupted context is preserved."""
        return self._call(self.kernel, addr, args, max_steps)

    def call_user(self, pid: int, addr: int, *args: int,
                  max_steps: int = DEFAULT_MAX_STEPS) -> int:
        """Call code in process ``pid`` in user mode; returns the first return register."""
        return self._call(self.process(pid).space, addr, args, max_steps)

    def _call(self, space: AddressSpace, addr: int, args: tuple[int, ...],
              max_steps: int) -> int:
        regs_class = self.arch.regs_class
        if len(args) > len(regs_class.ARGS):
            raise KprobeError(f"at most {len(regs_class.ARGS)} integer arguments")
        level = self._depth
        if level >= NESTED_STACKS:
            raise KprobeError(f"calls nested deeper than {NESTED_STACKS} levels")
        self._machine_pages(space)
        assert space.stack_top is not None
        saved = space.cpu.save_context() if level else None
        if saved is not None:
            self._preempted.append((space, self._pc_of(space)))
        self._depth += 1
        try:
            assert space.stack_top is not None
            self.prepare_call(space, space.stack_top - level * 2 * STACK_SIZE - 0x100, args)
            self._run(space, addr, frozenset({space.return_stop or RETURN_STOP}), max_steps)
            return space.cpu.reg_read(self.arch.cpu_regs[regs_class.RET[0]])
        finally:
            self._depth -= 1
            if saved is not None:
                self._preempted.pop()
                space.cpu.restore_context(saved)
            else:
                self._quiesce(space)

    def _quiesce(self, space: AddressSpace) -> None:
        """Outside every run: a quiescent state, where released slots no CPU is in are
        freed (the end of a grace period), and the optimizer retries the points a CPU's
        whereabouts deferred (Linux's optimizer work runs again later)."""
        manager = self._manager(space)
        collect_slot_garbage(manager)
        retry_deferred(manager)

    def prepare_call(self, space: AddressSpace, sp: int, args: tuple[int, ...]) -> int:
        """Load the arguments, push the return to the return-stop page and set the stack
        pointer below ``sp``; returns the new stack pointer."""
        self._machine_pages(space)
        regs_class = self.arch.regs_class
        for name, value in zip(regs_class.ARGS, args, strict=False):
            space.cpu.reg_write(self.arch.cpu_regs[name], value & _MASK)
        sp = self._push_return(space, sp)
        space.cpu.reg_write(self.arch.cpu_regs[regs_class.SP], sp)
        return sp

    # -- several CPUs (kprobe_ref.sim.smp) ----------------------------------------------------
    def start(self, cpu: int, addr: int, *args: int) -> None:
        """Begin a call of kernel code at ``addr`` on CPU ``cpu`` without running it."""
        self.smp.start(cpu, addr, args)

    def step(self, cpu: int, n: int = 1) -> int:
        """Run up to ``n`` instructions on CPU ``cpu`` (traps and handlers included);
        returns how many ran."""
        return self.smp.step(cpu, n)

    def done(self, cpu: int) -> bool:
        """Whether the call last started on (or migrated to) CPU ``cpu`` has returned."""
        return self.smp.done(cpu)

    def result(self, cpu: int) -> int:
        """That call's first return register."""
        return self.smp.result(cpu)

    def migrate(self, src: int, dst: int) -> None:
        """Move the task running on CPU ``src`` to the idle CPU ``dst``."""
        self.smp.migrate(src, dst)

    def _push_return(self, space: AddressSpace, sp: int) -> int:
        stop = space.return_stop or RETURN_STOP
        if self.arch.link_register is not None:
            space.cpu.reg_write(self.arch.link_register, stop)
            return sp
        sp -= 8
        space.write(sp, stop.to_bytes(8, "little"), enforce=False)
        return sp

    # -- KprobeAuxiliaryOps ------------------------------------------------------------------------
    def read_memory(self, addr: int, size: int, pid: int | None) -> bytes:
        return self._space(pid).read(addr, size)

    def write_memory(self, addr: int, data: bytes, pid: int | None) -> None:
        self._space(pid).write(addr, data, enforce=True)

    def set_writeable_for_address(self, addr: int, size: int, pid: int | None,
                                  action: Callable[[], None]) -> None:
        space = self._space(pid)

        def write() -> None:
            with space.writable(addr, size):
                action()

        if pid is None and space.has(addr, size, "x"):
            self.smp.patching.text_write(addr, size, write)
        else:
            write()

    def is_executable(self, addr: int, size: int, pid: int | None) -> bool:
        return self._space(pid).has(addr, size, "x")

    def probe_forbidden(self, addr: int, pid: int | None) -> str | None:
        table = self.ftrace if pid is None else None
        if table is not None and not table.abi.kprobes_on_ftrace and addr in table.sites:
            return ("it is an ftrace site and this kernel has no kprobes on ftrace "
                    "(Linux's check_ftrace_location refuses it)")
        clash = self._ftrace_overlap(addr) if pid is None else None
        return clash if clash is not None else self._space(pid).forbidden(addr)

    def _ftrace_overlap(self, addr: int) -> str | None:
        """A probe that would overlap the call of a kprobe on an ftrace site (riscv64's
        8-byte area holds two instructions): refused either way round, since the call
        and a breakpoint cannot share those bytes."""
        ft = self.manager.ftrace
        if ft is None:
            return None
        size = ft.abi.insn_size
        for site in range(addr - size + 1, addr):
            if ft.handles(site) and site in self.points:
                return f"it lies inside the ftrace call patched in for the kprobe at {site:#x}"
        if ft.handles(addr):
            for other in range(addr + 1, addr + size):
                if other in self.points:
                    return (f"its ftrace call would cover the probe at {other:#x} "
                            f"(the {size}-byte ftrace site starts here)")
        return None

    def within_kprobe_blacklist(self, addr: int) -> str | None:
        bl = self.kprobe_blacklist
        return bl.cause(addr) if bl is not None else None

    def search_exception_tables(self, addr: int, size: int) -> bool:
        return self.exception_table.any_in(addr, size)

    def function_containing(self, addr: int, pid: int | None) -> tuple[int, int] | None:
        return self._space(pid).function_containing(addr)

    def lookup_symbol(self, name: str, pid: int | None) -> list[int]:
        images = self.images if pid is None else [self.process(pid).image]
        found = {a for image in images for a in image.addresses.get(name, [])}
        space = self._space(pid)
        found |= {start for start, _, n in space.functions if n == name}
        return sorted(found)

    def alloc_kernel_exec_memory(self, near: int, size: int, reach: SlotReach = NO_REACH) -> int:
        """Executable memory for a slot or trampoline, as near ``near`` as free memory
        allows, meeting ``reach``: all of its constraints when some place does, else the
        required ones (the boosted variant is then left out), and never where a CPU still
        is.  ``near`` 0 means "anywhere" (trampolines)."""
        self._machine_pages(self.kernel)
        chunk = max(size, self.arch.slot_size)
        addr = self._place(self.kernel, near or KERNEL_EXEC_HINT, (0, 1 << 64), chunk, reach,
                           "the kernel's out-of-line slots and trampolines")
        self.smp.check_unoccupied(addr, chunk)
        return addr

    def _place(self, space: AddressSpace, near: int, area: tuple[int, int], chunk: int,
               reach: SlotReach, why: str) -> int:
        """Allocate a chunk in ``area`` (``[lo, hi)``) that meets every constraint of
        ``reach`` if possible, else its required ones; refuse with the reason otherwise."""
        lo, hi = area[0], area[1] - 1
        for wanted in (reach.required + reach.boost, reach.required):
            window = reach_window(wanted, lo, hi)
            if window is not None:
                got = space.alloc_exec(near, window, chunk, why)
                if got is not None:
                    return got
        window = reach_window(reach.required, lo, hi)
        needs = "; ".join(f"{r.why} needs {a:#x}..{b:#x}"
                          for r in reach.required for a, b in [r.window()])
        if window is None:
            raise OutOfReach(f"no address in {lo:#x}..{hi:#x} can hold a slot for {near:#x}: "
                             f"{needs}", "slot-out-of-reach", near)
        raise OutOfReach(f"no room for executable memory near {near:#x} in "
                         f"{window[0]:#x}..{window[1]:#x} ({needs or 'no constraint'})",
                         "no-room-for-slots", near)

    def exec_memory_in_use(self, addr: int, size: int, pid: int | None) -> bool:
        """The machine knows where its CPUs are: the address space's current PC, the PCs
        of the kernel tasks on every CPU and the PCs of the contexts nested calls have set
        aside (a run stopped by ``stop_at`` or a step
        limit leaves its PC where it stopped, like a preempted task)."""
        space = self._space(pid)
        here = self._pc_of(space)
        pcs = [pc for sp, pc in self._preempted if sp is space]
        if pid is None:
            pcs += [task.pc for task in self.smp.live_tasks()]
        if here != space.abandoned_pc:  # an aborted run's PC holds no task
            pcs.append(here)
        return any(addr <= pc < addr + size for pc in pcs)

    def _pc_of(self, space: AddressSpace) -> int:
        return space.cpu.reg_read(self.arch.cpu_regs[self.arch.regs_class.PC])

    def free_kernel_exec_memory(self, addr: int) -> None:
        area = self.kernel.area_of(addr)
        if area is None or addr not in area.used:
            self.kernel.free_exec(addr)  # raises: not allocated
        self.smp.grace.defer(addr, lambda: self.kernel.free_exec(addr))

    def alloc_user_exec_memory(self, pid: int, near: int, size: int,
                               reach: SlotReach = NO_REACH) -> int:
        """Executable memory in the process's out-of-line area (4 GiB from its
        ``xol_base``), placed as :meth:`alloc_kernel_exec_memory` places kernel slots but
        only inside that area."""
        space = self.process(pid).space
        self._machine_pages(space)
        base = space.xol_base
        return self._place(space, base, (base, base + (1 << 32)),
                           max(size, self.arch.slot_size), reach,
                           f"the out-of-line area of process {pid}")

    def free_user_exec_memory(self, pid: int, addr: int) -> None:
        self.process(pid).space.free_exec(addr)

    def read_extra_register(self, name: str) -> int:
        return self._current.cpu.reg_read(name)

    def write_extra_register(self, name: str, value: int) -> None:
        self._current.cpu.reg_write(name, value)

    def current_cpu(self) -> int:
        return self.smp.current

    def current_task(self) -> int:
        task = self.smp.running
        if task is not None and self._current.pid is None:
            return -task.tid  # kernel tasks of the CPUs; pids are positive
        return 0 if self._current.pid is None else self._current.pid

    def _instances(self) -> list[RetprobeInstance]:
        mine = self.smp.instances() if self._current.pid is None else None
        return self._current.instances if mine is None else mine

    def insert_kretprobe_instance_to_task(self, instance: RetprobeInstance) -> None:
        self._instances().append(instance)

    def pop_kretprobe_instance_from_task(self) -> RetprobeInstance | None:
        stack = self._instances()
        return stack.pop() if stack else None

    def task_kretprobe_instances(self) -> list[RetprobeInstance]:
        return list(self._instances())

    # -- observation -------------------------------------------------------------------------------
    def watch(self, addrs: set[int], pid: int | None = None) -> dict[int, int]:
        """Start counting executions of ``addrs`` (by the CPU, before any breakpoint is
        taken); returns the live counter."""
        cpu = self._space(pid).cpu
        cpu.watch |= set(addrs)
        return cpu.exec_counts

