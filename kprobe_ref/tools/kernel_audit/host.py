"""A read-only host over a kernel image file, so ``check_probe`` can answer for it.

:class:`ImageHost` implements the parts of :class:`~kprobe_ref.host.KprobeAuxiliaryOps`
that :func:`~kprobe_ref.manager.check_probe` uses (memory reads, executability, the
containing function, the blacklist) from the ELF file itself, at the image's link
addresses.  Nothing can be written or run: it exists to compare the whole-image fast path
with the one-address-at-a-time registration checks on a real kernel.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from typing import TYPE_CHECKING

from kprobe_ref.arch.base import NO_REACH, SlotReach
from kprobe_ref.errors import InvalidAddress
from kprobe_ref.kernel.blacklist import Blacklist
from kprobe_ref.kernel.elfscan import KernelElf

if TYPE_CHECKING:
    from kprobe_ref.kretprobe import RetprobeInstance

__all__ = ["ImageHost"]


class ImageHost:
    """Kernel memory as the image file holds it; functions as ``(start, size)`` pairs."""

    def __init__(self, kelf: KernelElf, functions: list[tuple[int, int]],
                 blacklist: Blacklist | None) -> None:
        self.kelf = kelf
        self.functions = sorted(functions)
        self._starts = [s for s, _ in self.functions]
        self.blacklist = blacklist
        self._text = [(s.addr, s.addr + s.size) for s in kelf.executable_sections()]

    def read_memory(self, addr: int, size: int, pid: int | None) -> bytes:
        try:
            return self.kelf.read(addr, size)
        except Exception as exc:
            raise InvalidAddress(str(exc)) from None

    def write_memory(self, addr: int, data: bytes, pid: int | None) -> None:
        raise InvalidAddress("the image host is read-only")

    def set_writeable_for_address(self, addr: int, size: int, pid: int | None,
                                  action: Callable[[], None]) -> None:
        raise InvalidAddress("the image host is read-only")

    def is_executable(self, addr: int, size: int, pid: int | None) -> bool:
        return pid is None and any(a <= addr and addr + size <= b for a, b in self._text)

    def probe_forbidden(self, addr: int, pid: int | None) -> str | None:
        return None

    def within_kprobe_blacklist(self, addr: int) -> str | None:
        return self.blacklist.cause(addr) if self.blacklist is not None else None

    def function_containing(self, addr: int, pid: int | None) -> tuple[int, int] | None:
        i = bisect.bisect_right(self._starts, addr) - 1
        while i >= 0:
            start, size = self.functions[i]
            if start <= addr < start + size:
                return start, size
            if start + size <= addr and size > 0:
                return None
            i -= 1
        return None

    def alloc_kernel_exec_memory(self, near: int, size: int, reach: SlotReach = NO_REACH) -> int:
        raise InvalidAddress("the image host has no executable memory to give")

    def free_kernel_exec_memory(self, addr: int) -> None:
        raise InvalidAddress("the image host has no executable memory")

    def alloc_user_exec_memory(self, pid: int, near: int, size: int,
                               reach: SlotReach = NO_REACH) -> int:
        raise InvalidAddress("the image host has no processes")

    def free_user_exec_memory(self, pid: int, addr: int) -> None:
        raise InvalidAddress("the image host has no processes")

    def read_extra_register(self, name: str) -> int:
        raise InvalidAddress("the image host has no CPU")

    def write_extra_register(self, name: str, value: int) -> None:
        raise InvalidAddress("the image host has no CPU")

    def current_cpu(self) -> int:
        return 0

    def current_task(self) -> int:
        return 0

    def insert_kretprobe_instance_to_task(self, instance: RetprobeInstance) -> None:
        raise InvalidAddress("the image host has no tasks")

    def pop_kretprobe_instance_from_task(self) -> RetprobeInstance | None:
        return None

    def task_kretprobe_instances(self) -> list[RetprobeInstance]:
        return []
