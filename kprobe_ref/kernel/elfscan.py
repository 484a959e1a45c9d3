"""Sections, symbols and relocations of a 64-bit little-endian ELF image, read directly.

A distribution vmlinux has 100,000-200,000 symbols; building a Python object per symbol
through pyelftools takes seconds, so the symbol table and the ``RELA`` entries are unpacked
here with :mod:`struct` from the file's bytes.  Section headers still come from pyelftools.

Only what the kernel audit needs: the bytes at a virtual address (as the file holds them,
with ``R_*_RELATIVE`` relocations applied on request, as a booted kernel sees them before
KASLR), every defined symbol, and which sections are executable.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

from kprobe_ref.errors import InvalidImage

__all__ = ["KernelElf", "Section", "Symbol"]

SHF_ALLOC, SHF_EXECINSTR = 0x2, 0x4
SHT_NOBITS, SHT_RELA, SHT_SYMTAB = 8, 4, 2
STT_NOTYPE, STT_OBJECT, STT_FUNC, STT_SECTION, STT_FILE = 0, 1, 2, 3, 4
SHN_UNDEF, SHN_ABS = 0, 0xFFF1
MACHINES = {62: "x86_64", 183: "aarch64", 243: "riscv64", 258: "loongarch64"}
"""``e_machine`` -> ISA name."""


@dataclass(frozen=True)
class Section:
    """One section header."""

    index: int
    name: str
    addr: int
    offset: int
    size: int
    type: int
    flags: int

    @property
    def executable(self) -> bool:
        """Whether the section is loaded and executable (text)."""
        return bool(self.flags & SHF_ALLOC) and bool(self.flags & SHF_EXECINSTR)

    @property
    def has_bytes(self) -> bool:
        """Whether the file holds the section's contents (not ``.bss``-like)."""
        return self.type != SHT_NOBITS and bool(self.flags & SHF_ALLOC)


@dataclass(frozen=True)
class Symbol:
    """One defined symbol: ``kind`` is the ``STT_*`` type, ``shndx`` its section index."""

    name: str
    addr: int
    size: int
    kind: int
    shndx: int


class KernelElf:
    """A memory-mapped ELF image: its sections, symbols and relocations."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        try:
            self._fh = open(path, "rb")  # noqa: SIM115 (kept open for the mapping)
        except OSError as exc:
            raise InvalidImage(f"cannot read {path}: {exc.strerror}") from None
        try:
            self.data = mmap.mmap(self._fh.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as exc:
            self._fh.close()
            raise InvalidImage(f"cannot map {path}: {exc}") from None
        try:
            self._header()
        except InvalidImage:
            self.close()
            raise
        except (struct.error, IndexError, UnicodeDecodeError) as exc:
            self.close()
            raise InvalidImage(f"{path}: not a readable ELF image ({exc})") from None
        self._loaded = sorted((s for s in self.sections if s.has_bytes and s.size),
                              key=lambda s: s.addr)

    def close(self) -> None:
        """Release the mapping and the file."""
        self.data.close()
        self._fh.close()

    # -- bytes ---------------------------------------------------------------------------------
    def section_at(self, addr: int) -> Section | None:
        """The loaded section (with file bytes) holding virtual address ``addr``."""
        for s in self._loaded:
            if s.addr <= addr < s.addr + s.size:
                return s
        return None

    def read(self, addr: int, size: int) -> bytes:
        """The file's bytes at ``[addr, addr+size)``; raises ``InvalidImage`` if no section
        with file contents holds the whole range."""
        s = self.section_at(addr)
        if s is None or addr + size > s.addr + s.size:
            raise InvalidImage(f"{self.path}: {addr:#x}+{size:#x} is not in a section")
        off = s.offset + addr - s.addr
        return bytes(self.data[off : off + size])

    def executable_sections(self) -> list[Section]:
        """The loaded executable sections, by address."""
        return [s for s in self._loaded if s.executable]

    # -- symbols -------------------------------------------------------------------------------
    def symbols(self) -> list[Symbol]:
        """Every defined, named symbol of ``.symtab`` (absolute ones included), in table
        order."""
        tab = next((s for s in self.sections if s.type == SHT_SYMTAB), None)
        if tab is None:
            return []
        strtab = self.sections[self._link(tab.index)]
        strings = self.data[strtab.offset : strtab.offset + strtab.size]
        out: list[Symbol] = []
        raw = self.data[tab.offset : tab.offset + tab.size]
        for name_off, info, _other, shndx, value, size in struct.iter_unpack("<IBBHQQ", raw):
            if shndx == SHN_UNDEF or name_off == 0:
                continue
            end = strings.find(b"\0", name_off)
            out.append(Symbol(strings[name_off:end].decode("utf-8", "replace"), value, size,
                              info & 0xF, shndx))
        return out

    def _link(self, index: int) -> int:
        """``sh_link`` of a section (the string table of a symbol table)."""
        return self._links[index]

    def _header(self) -> None:
        """Check the ELF header and read the section headers."""
        d = self.data
        if d[:4] != b"\x7fELF":
            raise InvalidImage(f"{self.path}: not an ELF file")
        if d[4] != 2 or d[5] != 1:
            raise InvalidImage(f"{self.path}: not a 64-bit little-endian ELF image")
        e_type, machine = struct.unpack_from("<HH", d, 0x10)
        isa = MACHINES.get(machine)
        if isa is None:
            raise InvalidImage(f"{self.path}: unsupported machine {machine}")
        self.isa: str = isa
        self.elf_type = {1: "ET_REL", 2: "ET_EXEC", 3: "ET_DYN"}.get(e_type, str(e_type))
        shoff, = struct.unpack_from("<Q", d, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", d, 0x3A)
        heads = [struct.unpack_from("<IIQQQQIIQQ", d, shoff + i * shentsize)
                 for i in range(shnum)]
        names_off = heads[shstrndx][4] if shnum else 0
        self.sections: list[Section] = []
        self._links: list[int] = []
        for i, (name, stype, flags, addr, off, size, link, _info, _al, _es) in enumerate(heads):
            end = d.find(b"\0", names_off + name)
            self.sections.append(Section(i, d[names_off + name : end].decode(), addr, off, size,
                                         stype, flags))
            self._links.append(link)

    # -- relocations ---------------------------------------------------------------------------
    def relative_relocations(self, rtype: int, lo: int, hi: int) -> dict[int, int]:
        """``r_offset -> r_addend`` of every ``RELA`` entry of type ``rtype`` (the ISA's
        ``R_*_RELATIVE``) in an allocated relocation section (``.rela.dyn``) whose target
        lies in ``[lo, hi)``: the values a loader writes there."""
        out: dict[int, int] = {}
        for s in self.sections:
            if s.type != SHT_RELA or not s.flags & SHF_ALLOC:
                continue
            raw = self.data[s.offset : s.offset + s.size]
            for offset, info, addend in struct.iter_unpack("<QQq", raw):
                if info & 0xFFFF_FFFF == rtype and lo <= offset < hi:
                    out[offset] = addend & 0xFFFF_FFFF_FFFF_FFFF
        return out

