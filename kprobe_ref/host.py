"""What the embedding kernel must provide: :class:`KprobeAuxiliaryOps`.

The probe engine never touches memory, page tables or tasks itself.  Everything it needs
from its host goes through this protocol, so porting kprobe-ref to a kernel means
implementing these methods (``docs/porting.md`` maps each one to the usual kernel
facility).  The seed crate's trait has the same role; its names are kept where it has them
(``set_writeable_for_address``, ``alloc_kernel_exec_memory``, ``free_kernel_exec_memory``,
``alloc_user_exec_memory``, ``free_user_exec_memory``,
``insert_kretprobe_instance_to_task``, ``pop_kretprobe_instance_from_task``), and its
``copy_memory`` is split into :meth:`read_memory` and :meth:`write_memory`.

``pid`` is ``None`` for kernel memory and a process id for user memory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from kprobe_ref.arch.base import NO_REACH, SlotReach

if TYPE_CHECKING:
    from kprobe_ref.kretprobe import RetprobeInstance

__all__ = ["KprobeAuxiliaryOps"]


class KprobeAuxiliaryOps(Protocol):
    """The host services the probe engine relies on."""

    def read_memory(self, addr: int, size: int, pid: int | None) -> bytes:
        """Copy ``size`` bytes out of kernel or process memory.

        Raises :class:`~kprobe_ref.errors.InvalidAddress` if any byte is unmapped."""

    def write_memory(self, addr: int, data: bytes, pid: int | None) -> None:
        """Copy ``data`` into kernel or process memory and make the CPU see it (discard
        cached translations, flush the instruction cache).  Writing to a page that is not
        writable fails unless inside :meth:`set_writeable_for_address`."""

    def set_writeable_for_address(
        self, addr: int, size: int, pid: int | None, action: Callable[[], None]
    ) -> None:
        """Make ``[addr, addr+size)`` writable, run ``action``, restore the permissions."""

    def is_executable(self, addr: int, size: int, pid: int | None) -> bool:
        """Tell whether every byte of the range is mapped and executable."""

    def probe_forbidden(self, addr: int, pid: int | None) -> str | None:
        """Return why ``addr`` must never be probed (the machinery's own code: slots,
        trampolines, trap paths), or ``None`` when it may be."""

    def within_kprobe_blacklist(self, addr: int) -> str | None:
        """Return why the kernel refuses a kprobe at kernel address ``addr``, as a cause
        code (``nokprobe``, ``noinstr-text``, ``jump-label``...; see
        ``kprobe_ref/kernel/blacklist.py``), or ``None``.  Linux's
        ``within_kprobe_blacklist`` together with the reserved-site checks of
        ``check_kprobe_address_safe`` (jump labels, static calls, BUG sites, CFI
        preambles)."""

    def function_containing(self, addr: int, pid: int | None) -> tuple[int, int] | None:
        """Return ``(start, size)`` of the known function containing ``addr`` (kallsyms, or
        the process image's symbol table), or ``None``."""

    def lookup_symbol(self, name: str, pid: int | None) -> list[int]:
        """Return every address of a symbol called ``name`` (Linux's
        ``kallsyms_lookup_name``, or the process image's symbol table), in ascending
        order; empty when there is none.  Several addresses make the name ambiguous."""

    def alloc_kernel_exec_memory(self, near: int, size: int, reach: SlotReach = NO_REACH) -> int:
        """Allocate ``size`` bytes of kernel executable memory and return its address.

        For a slot, ``near`` is the probed address and ``reach`` says where the slot may go
        (``ArchOps.reach``): every required constraint must hold (the engine checks, and
        refuses the probe otherwise), and the boost constraints should when some free
        place allows, searching outward from ``near`` as Linux's ``module_alloc`` keeps
        kernel slots within reach of kernel text.  ``near`` 0 asks for memory anywhere
        (a return trampoline)."""

    def free_kernel_exec_memory(self, addr: int) -> None:
        """Free memory from :meth:`alloc_kernel_exec_memory`."""

    def alloc_user_exec_memory(self, pid: int, near: int, size: int,
                               reach: SlotReach = NO_REACH) -> int:
        """Allocate ``size`` bytes of executable memory in process ``pid`` (its
        out-of-line slot area) and return its address; the area need not be near, but a
        slot there must meet ``reach`` as a kernel slot does."""

    def free_user_exec_memory(self, pid: int, addr: int) -> None:
        """Free memory from :meth:`alloc_user_exec_memory`."""

    def exec_memory_in_use(self, addr: int, size: int, pid: int | None) -> bool:
        """Whether a CPU may still execute in ``[addr, addr+size)`` of that address space:
        a CPU's PC, or the PC of a preempted or interrupted context, lies there.  The
        engine frees a slot only when this is false (and no CPU is inside a probe
        handler).  A kernel answers it by waiting for a grace period instead of looking:
        ``synchronize_rcu()`` where a task cannot be preempted in a slot (Linux boosts only
        without ``CONFIG_PREEMPTION``), ``synchronize_rcu_tasks()`` where it can."""

    def read_extra_register(self, name: str) -> int:
        """Read CPU state outside ``pt_regs`` (an FP/SIMD register, an FP condition flag)
        of the interrupted context, by architectural name."""

    def write_extra_register(self, name: str, value: int) -> None:
        """Write CPU state outside ``pt_regs`` of the interrupted context."""

    def current_cpu(self) -> int:
        """Return the id of the CPU executing the trap being handled."""

    def current_task(self) -> int:
        """Return the id of the task (thread) executing on the current CPU."""

    def insert_kretprobe_instance_to_task(self, instance: RetprobeInstance) -> None:
        """Push a return-probe instance on the current task's instance stack."""

    def pop_kretprobe_instance_from_task(self) -> RetprobeInstance | None:
        """Pop the current task's most recent return-probe instance (``None`` if empty)."""

    def task_kretprobe_instances(self) -> list[RetprobeInstance]:
        """Return the current task's instance stack, oldest first (read-only view)."""
