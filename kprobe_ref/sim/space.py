"""One address space of the simulated machine: the kernel's, or a process's.

An :class:`AddressSpace` owns a CPU backend (which holds the memory), the page permissions as
the host sees them, the known functions (kallsyms, or a process image's symbol table), the
executable areas that hold out-of-line slots and trampolines, and the task's stack of
return-probe instances.  Host writes obey page permissions except inside a writable window
(:meth:`writable`), as ``set_writeable_for_address`` opens in a kernel.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kprobe_ref.errors import InvalidAddress
from kprobe_ref.sim.cpu import Cpu, Perms

if TYPE_CHECKING:
    from kprobe_ref.kretprobe import RetprobeInstance

__all__ = ["PAGE", "AddressSpace", "ExecArea", "page_down", "page_up"]

PAGE = 0x1000
EXEC_AREA_SIZE = 0x10000


def page_down(a: int) -> int:
    """Round down to a page boundary."""
    return a & ~(PAGE - 1)


def page_up(a: int) -> int:
    """Round up to a page boundary."""
    return (a + PAGE - 1) & ~(PAGE - 1)


@dataclass
class ExecArea:
    """A region of executable memory carved into equal chunks (slots, trampolines).

    Free chunks sit on a stack, lowest address on top, so taking and giving back a chunk
    costs the same however many are in use."""

    base: int
    size: int
    chunk: int
    used: set[int] = field(default_factory=set)
    free: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.free = list(range(self.base + self.size - self.chunk, self.base - 1, -self.chunk))

    def take(self) -> int | None:
        """Return a free chunk's address and mark it used, or ``None`` when full."""
        if not self.free:
            return None
        got = self.free.pop()
        self.used.add(got)
        return got

    def give(self, addr: int) -> None:
        """Mark the chunk at ``addr`` (which must be in use) free again."""
        self.used.remove(addr)
        self.free.append(addr)

    def contains(self, addr: int) -> bool:
        return self.base <= addr < self.base + self.size

    def within(self, first: int, last: int) -> bool:
        """Whether every chunk's address lies in ``[first, last]``."""
        return first <= self.base and self.base + self.size - self.chunk <= last


class AddressSpace:
    """Memory, permissions, symbols and executable areas of the kernel or one process."""

    def __init__(self, cpu: Cpu, pid: int | None) -> None:
        self.cpu = cpu
        self.pid = pid
        self.perms: dict[int, Perms] = {}
        self.functions: list[tuple[int, int, str]] = []
        self._areas: dict[int, ExecArea] = {}
        self._area_bases: list[int] = []
        self._open: dict[int, list[int]] = {}
        """Chunk size -> sorted bases of the areas that have a free chunk."""
        self.reserved: list[tuple[int, int, str]] = []
        """Ranges the probe machinery executes, sorted by address."""
        self._widest = 0
        self.instances: list[RetprobeInstance] = []
        self.abandoned_pc: int | None = None
        """Where an aborted run left the CPU: a PC no task will continue from."""
        self.xol_base = 0
        """Where a process's out-of-line slot area goes."""
        self.return_stop: int | None = None
        """The machine's return-stop page, placed on first use where nothing is mapped."""
        self.stack_top: int | None = None
        """The top of the machine's outermost call stack, placed on first use."""

    def where(self) -> str:
        return "kernel" if self.pid is None else f"process {self.pid}"

    # -- mapping ----------------------------------------------------------------------------
    def is_free(self, addr: int, size: int) -> bool:
        return all(p not in self.perms for p in range(page_down(addr), page_up(addr + size), PAGE))

    def map(self, addr: int, size: int, perms: Perms) -> None:
        """Map zeroed pages covering ``[addr, addr+size)``."""
        start, end = page_down(addr), page_up(addr + size)
        if not self.is_free(start, end - start):
            raise InvalidAddress(f"{start:#x}..{end:#x} overlaps mapped memory in {self.where()}")
        self.cpu.map(start, end - start, perms)
        for p in range(start, end, PAGE):
            self.perms[p] = perms

    def protect(self, addr: int, size: int, perms: Perms) -> None:
        for p in range(page_down(addr), page_up(addr + size), PAGE):
            self._need(p)
            self.cpu.protect(p, PAGE, perms)
            self.perms[p] = perms

    def _need(self, page: int) -> Perms:
        if page not in self.perms:
            raise InvalidAddress(f"{page:#x} is not mapped in {self.where()}")
        return self.perms[page]

    def has(self, addr: int, size: int, letter: str) -> bool:
        """Whether every page of the range is mapped with permission ``letter``."""
        pages = range(page_down(addr), page_up(addr + max(size, 1)), PAGE)
        return all(letter in self.perms.get(p, "") for p in pages)

    # -- host access ---------------------------------------------------------------------------
    def read(self, addr: int, size: int) -> bytes:
        """Read mapped memory (any permissions)."""
        for p in range(page_down(addr), page_up(addr + max(size, 1)), PAGE):
            self._need(p)
        return self.cpu.mem_read(addr, size)

    def write(self, addr: int, data: bytes, enforce: bool) -> None:
        """Write memory; with ``enforce``, every page must be writable."""
        for p in range(page_down(addr), page_up(addr + max(len(data), 1)), PAGE):
            perms = self._need(p)
            if enforce and "w" not in perms:
                raise InvalidAddress(
                    f"{addr:#x} is not writable in {self.where()} ({perms or 'no access'})"
                )
        self.cpu.mem_write(addr, data)

    @contextmanager
    def writable(self, addr: int, size: int) -> Iterator[None]:
        """Make the pages of a range writable to the host for the duration of the block.

        Only the host's view changes: host writes reach the CPU's memory whatever its page
        protection, so the CPU's mappings are never re-protected (in unicorn, a
        ``mem_protect`` on part of a region splits it; an arm and disarm per probe would
        fragment a large kernel's text into thousands of regions).  Guest code keeps seeing
        its text read-only and executable throughout."""
        pages = list(range(page_down(addr), page_up(addr + max(size, 1)), PAGE))
        saved = {p: self._need(p) for p in pages}
        for p, perms in saved.items():
            if "w" not in perms:
                self.perms[p] = perms + "w"
        try:
            yield
        finally:
            for p, perms in saved.items():
                self.perms[p] = perms

    # -- symbols -------------------------------------------------------------------------------
    def add_function(self, name: str, addr: int, size: int) -> None:
        bisect.insort(self.functions, (addr, size, name))

    def function_containing(self, addr: int) -> tuple[int, int] | None:
        i = bisect.bisect_right(self.functions, (addr, 1 << 64, "")) - 1
        while i >= 0:
            start, size, _ = self.functions[i]
            if start <= addr < start + size:
                return start, size
            if start + size <= addr and size > 0:
                return None
            i -= 1
        return None

    # -- executable areas ------------------------------------------------------------------------
    def find_free(self, lo: int, hi: int, size: int) -> int | None:
        """The lowest address in ``[lo, hi)``, aligned to :data:`EXEC_AREA_SIZE` (the
        first page excepted), with ``size`` bytes free."""
        a = page_up(max(lo, PAGE))
        while a + size <= hi:
            if self.is_free(a, size):
                return a
            a += EXEC_AREA_SIZE
        return None

    def alloc_exec(self, near: int, window: tuple[int, int], chunk: int, why: str) -> int | None:
        """A chunk of executable memory whose address lies in ``window`` (``[first, last]``,
        inclusive), as near ``near`` as the areas allow, or ``None`` when no place in the
        window is free.

        An area with a free chunk is reused when it lies wholly in the window (the nearest
        such one); otherwise a new area of :data:`EXEC_AREA_SIZE` bytes is mapped at the
        free, aligned place nearest ``near``, searching outward as Linux's module-area
        allocator places code near kernel text."""
        first, last = window
        got = self._take_open(near, first, last, chunk)
        if got is not None:
            return got
        base = self._free_area_near(near, first, last - (EXEC_AREA_SIZE - chunk))
        if base is None:
            return None
        self.map(base, EXEC_AREA_SIZE, "rx")
        self.cpu.mem_write(base, b"\0" * EXEC_AREA_SIZE)
        area = ExecArea(base, EXEC_AREA_SIZE, chunk)
        bisect.insort(self._area_bases, base)
        self._areas[base] = area
        bisect.insort(self._open.setdefault(chunk, []), base)
        self.reserve(base, EXEC_AREA_SIZE, why)
        return self._take(area)

    def _take(self, area: ExecArea) -> int:
        got = area.take()
        assert got is not None
        if not area.free:
            bases = self._open[area.chunk]
            del bases[bisect.bisect_left(bases, area.base)]
        return got

    def _take_open(self, near: int, first: int, last: int, chunk: int) -> int | None:
        """Take a chunk from the open area (one with a free chunk) of this chunk size nearest
        ``near`` that lies wholly in ``[first, last]``."""
        bases = self._open.get(chunk, [])
        right = bisect.bisect_left(bases, near)
        left = right - 1
        while left >= 0 or right < len(bases):
            go_right = left < 0 or (
                right < len(bases) and bases[right] - near <= near - bases[left])
            i = right if go_right else left
            area = self._areas[bases[i]]
            if area.within(first, last):
                return self._take(area)
            if go_right:
                right = right + 1 if area.base <= last else len(bases)
            else:
                left = left - 1 if area.base >= first else -1
        return None

    def _free_area_near(self, near: int, first: int, last: int) -> int | None:
        """The free, :data:`EXEC_AREA_SIZE`-aligned base in ``[first, last]`` nearest
        ``near`` (the first page is never used)."""
        size = EXEC_AREA_SIZE
        lo = max(first + (-first % size), size)
        hi = min(last, (1 << 64) - size)
        hi -= hi % size
        if lo > hi:
            return None
        mid = min(max(near - near % size, lo), hi)
        up, down = mid, mid - size
        while up <= hi or down >= lo:
            if up <= hi and (down < lo or up - near <= near - down):
                if self.is_free(up, size):
                    return up
                up += size
            else:
                if self.is_free(down, size):
                    return down
                down -= size
        return None

    @property
    def exec_areas(self) -> list[ExecArea]:
        """The executable areas (slots, trampolines), in address order."""
        return [self._areas[b] for b in self._area_bases]

    def area_of(self, addr: int) -> ExecArea | None:
        """The executable area holding ``addr``, if any."""
        i = bisect.bisect_right(self._area_bases, addr) - 1
        if i < 0:
            return None
        area = self._areas[self._area_bases[i]]
        return area if area.contains(addr) else None

    def free_exec(self, addr: int) -> None:
        area = self.area_of(addr)
        if area is None or addr not in area.used:
            raise InvalidAddress(
                f"{addr:#x} is not allocated executable memory in {self.where()}")
        if not area.free:
            bisect.insort(self._open.setdefault(area.chunk, []), area.base)
        area.give(addr)

    def reserve(self, addr: int, size: int, why: str) -> None:
        """Mark a range the probe machinery itself executes: it must never be probed."""
        bisect.insort(self.reserved, (addr, size, why))
        self._widest = max(self._widest, size)

    def forbidden(self, addr: int) -> str | None:
        """Why ``addr`` must not be probed (it lies in a reserved range), or ``None``."""
        i = bisect.bisect_right(self.reserved, (addr, 1 << 64, ""))
        while i > 0 and self.reserved[i - 1][0] > addr - self._widest:
            base, size, why = self.reserved[i - 1]
            if base <= addr < base + size:
                return why
            i -= 1
        return None
