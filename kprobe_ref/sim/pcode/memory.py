"""Guest memory of the P-code CPU: sparse 4 KiB pages, each with its own permissions."""

from __future__ import annotations

from kprobe_ref.sim.cpu import Perms
from kprobe_ref.sim.pcode.trap import PcodeFault

__all__ = ["MAX_INSN", "PAGE_SHIFT", "PAGE_SIZE", "Memory", "page_range"]

PAGE_SIZE = 4096
PAGE_SHIFT = 12
MAX_INSN = 16
"""The most bytes one instruction may have (x86_64's limit; the other ISAs use 2 or 4)."""

_R, _W, _X = 1, 2, 4


def _perm_bits(perms: Perms) -> int:
    """Return the permission string ``perms`` as a bit set of ``_R | _W | _X``."""
    if set(perms) - set("rwx"):
        raise ValueError(f"bad permissions {perms!r}: use the letters r, w and x")
    return (_R if "r" in perms else 0) | (_W if "w" in perms else 0) | (_X if "x" in perms else 0)


def page_range(addr: int, size: int) -> range:
    """Return the page numbers covering ``size`` bytes at ``addr``."""
    return range(addr >> PAGE_SHIFT, (addr + size + PAGE_SIZE - 1) >> PAGE_SHIFT)


class Memory:
    """Sparse little-endian memory of 4 KiB pages, each with its own permissions.

    Host accesses (:meth:`read`, :meth:`write`) ignore permissions and raise ``ValueError``
    on unmapped pages; guest accesses (:meth:`load`, :meth:`store`, :meth:`fetch`) obey
    them and raise :class:`PcodeFault`.
    """

    def __init__(self) -> None:
        self.data: dict[int, bytearray] = {}
        self.perm: dict[int, int] = {}
        self.epoch = 0
        """Counts the changes of the page map (:meth:`map`, :meth:`protect`): code found
        executable at one epoch stays executable until the epoch changes."""

    def map(self, addr: int, size: int, perms: Perms) -> None:
        """Map zeroed pages; the range must be page-aligned and not yet mapped."""
        if addr % PAGE_SIZE or size % PAGE_SIZE or size <= 0:
            raise ValueError(f"map({addr:#x}, {size:#x}): not page-aligned")
        bits_ = _perm_bits(perms)
        pages = page_range(addr, size)
        if any(p in self.data for p in pages):
            raise ValueError(f"map({addr:#x}, {size:#x}): overlaps a mapped page")
        for p in pages:
            self.data[p] = bytearray(PAGE_SIZE)
            self.perm[p] = bits_
        self.epoch += 1

    def protect(self, addr: int, size: int, perms: Perms) -> None:
        """Set the permissions of mapped pages."""
        bits_ = _perm_bits(perms)
        pages = page_range(addr, size)
        for p in pages:
            if p not in self.data:
                raise ValueError(f"protect: page {p << PAGE_SHIFT:#x} is not mapped")
        for p in pages:
            self.perm[p] = bits_
        self.epoch += 1

    def _span(self, addr: int, n: int) -> list[tuple[bytearray, int, int]]:
        """Split ``n`` bytes at ``addr`` into (page, start, end) pieces, host view."""
        pieces = []
        while n > 0:
            page = self.data.get(addr >> PAGE_SHIFT)
            if page is None:
                raise ValueError(f"host access to unmapped address {addr:#x}")
            lo = addr & (PAGE_SIZE - 1)
            k = min(n, PAGE_SIZE - lo)
            pieces.append((page, lo, lo + k))
            addr, n = addr + k, n - k
        return pieces

    def read(self, addr: int, n: int) -> bytes:
        """Host read, ignoring permissions."""
        return b"".join(bytes(p[a:b]) for p, a, b in self._span(addr, n))

    def write(self, addr: int, data: bytes) -> None:
        """Host write, ignoring permissions."""
        pos = 0
        for p, a, b in self._span(addr, len(data)):
            p[a:b] = data[pos : pos + b - a]
            pos += b - a

    def _check(self, addr: int, n: int, need: int, access: str) -> None:
        """Raise :class:`PcodeFault` unless every page of the access allows ``need``."""
        for p in page_range(addr, n):
            perm = self.perm.get(p)
            where = max(addr, p << PAGE_SHIFT)
            if perm is None:
                raise PcodeFault(where, access, "unmapped")
            if not perm & need:
                raise PcodeFault(where, access, "forbidden by page permissions")

    def load(self, addr: int, n: int) -> int:
        """Guest read of an ``n``-byte little-endian value."""
        addr &= 0xFFFF_FFFF_FFFF_FFFF
        p = addr >> PAGE_SHIFT
        lo = addr & (PAGE_SIZE - 1)
        if lo + n <= PAGE_SIZE and self.perm.get(p, 0) & _R:
            return int.from_bytes(self.data[p][lo : lo + n], "little")
        self._check(addr, n, _R, "read")
        return int.from_bytes(self.read(addr, n), "little")

    def store(self, addr: int, n: int, value: int) -> None:
        """Guest write of an ``n``-byte little-endian value."""
        addr &= 0xFFFF_FFFF_FFFF_FFFF
        p = addr >> PAGE_SHIFT
        lo = addr & (PAGE_SIZE - 1)
        raw = (value & ((1 << (8 * n)) - 1)).to_bytes(n, "little")
        if lo + n <= PAGE_SIZE and self.perm.get(p, 0) & _W:
            self.data[p][lo : lo + n] = raw
            return
        self._check(addr, n, _W, "write")
        self.write(addr, raw)

    def fetch(self, addr: int) -> bytes:
        """Return up to 16 instruction bytes at ``addr``, stopping at a non-executable page.

        Raises :class:`PcodeFault` when ``addr`` itself cannot be executed.
        """
        self._check(addr, 1, _X, "fetch")
        out = b""
        while len(out) < MAX_INSN:
            cur = addr + len(out)
            p = cur >> PAGE_SHIFT
            if not self.perm.get(p, 0) & _X:
                break
            lo = cur & (PAGE_SIZE - 1)
            out += bytes(self.data[p][lo : min(PAGE_SIZE, lo + MAX_INSN - len(out))])
        return out

    def executable(self, addr: int, length: int) -> bool:
        """Tell whether every byte of ``length`` bytes at ``addr`` may be executed."""
        return all(self.perm.get(p, 0) & _X for p in page_range(addr, length))
