"""Loading static ELF images into an address space at their link addresses.

An image is a static executable (``ET_EXEC``) or a self-relocating one (``ET_DYN`` without
an interpreter, as an arm64 vmlinux linked with ``--no-apply-dynamic-relocs``).  Loaded are
the ``PT_LOAD`` segments (file bytes, then zeros up to ``p_memsz``, with the segment's
permissions) anywhere in the address space, virtual address 0 included, and the symbol table
(functions with their sizes, and data objects).  The ``R_*_RELATIVE`` relocations of an
``ET_DYN`` image's ``.rela.dyn`` are applied for a load at the link address (each word becomes
its addend; entries of other types are left as Linux's early relocation code leaves them), so
the memory equals a booted kernel's before KASLR moves it.  Pages are mapped in coalesced
runs (one CPU mapping per run of pages with equal permissions), never one map per page.
Anything else, an image needing an interpreter, a relocatable object, another ISA, a file
that is not ELF, is refused with :class:`~kprobe_ref.errors.InvalidImage`.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass, field
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from kprobe_ref.errors import InvalidImage
from kprobe_ref.sim.space import PAGE, AddressSpace, page_down, page_up

__all__ = ["ELF_MACHINES", "Image", "load_image", "read_image"]

ELF_MACHINES: dict[str, str] = {
    "EM_X86_64": "x86_64",
    "EM_AARCH64": "aarch64",
    "EM_RISCV": "riscv64",
    "EM_LOONGARCH": "loongarch64",
    "258": "loongarch64",
}
"""``e_machine`` -> ISA name."""

RELATIVE_TYPES: dict[str, int] = {
    "x86_64": 8,  # R_X86_64_RELATIVE
    "aarch64": 1027,  # R_AARCH64_RELATIVE
    "riscv64": 3,  # R_RISCV_RELATIVE
    "loongarch64": 3,  # R_LARCH_RELATIVE
}
"""The ISA's ``R_*_RELATIVE`` relocation type: the word at ``r_offset`` becomes load base
plus ``r_addend`` (the base is 0 for a load at the link address)."""


@dataclass
class Segment:
    vaddr: int
    data: bytes
    memsz: int
    perms: str


@dataclass
class Image:
    """A loaded (or parsed) static image."""

    path: str
    isa: str
    entry: int
    segments: list[Segment] = field(default_factory=list)
    symbols: dict[str, int] = field(default_factory=dict)
    """Every defined function, data and plain label symbol, by name."""
    sizes: dict[str, int] = field(default_factory=dict)
    functions: dict[str, int] = field(default_factory=dict)
    """Function symbols with a nonzero size, by name; of several static functions with one
    name (a kernel has many), the first in the symbol table."""
    function_symbols: list[tuple[int, int, str]] = field(default_factory=list)
    """Every function symbol with a nonzero size as ``(address, size, name)``, sorted by
    address: duplicate static names are all kept, told apart by address."""
    relocations: int = 0
    """How many ``R_*_RELATIVE`` relocations were applied."""
    skipped_relocations: int = 0
    """How many ``.rela.dyn`` entries of other types were left unapplied, as Linux's
    early relocation code leaves them."""

    def functions_named(self, name: str) -> list[int]:
        """The addresses of every function called ``name`` (several for static ones)."""
        return [a for a, _, n in self.function_symbols if n == name]


def _perms(flags: int) -> str:
    return ("r" if flags & 4 else "") + ("w" if flags & 2 else "") + ("x" if flags & 1 else "")


_KINDS = ("STT_FUNC", "STT_OBJECT", "STT_NOTYPE")


def _symbols(elf: ELFFile, image: Image) -> None:
    for section in elf.iter_sections():
        if not isinstance(section, SymbolTableSection):
            continue
        for sym in section.iter_symbols():
            kind, shndx = sym["st_info"]["type"], sym["st_shndx"]
            if not sym.name or shndx == "SHN_UNDEF" or kind not in _KINDS:
                continue
            is_function = kind == "STT_FUNC" and sym["st_size"] > 0
            if is_function:
                image.function_symbols.append((sym["st_value"], sym["st_size"], sym.name))
            if sym.name in image.symbols and sym.name in image.functions:
                continue
            image.symbols[sym.name] = sym["st_value"]
            image.sizes[sym.name] = sym["st_size"]
            if is_function:
                image.functions[sym.name] = sym["st_value"]
    image.function_symbols.sort()


def _segment_for(image: Image, addr: int, size: int) -> Segment | None:
    for seg in image.segments:
        if seg.vaddr <= addr and addr + size <= seg.vaddr + seg.memsz:
            return seg
    return None


def _apply_relative(elf: ELFFile, image: Image, path: str | Path) -> None:
    """Apply ``.rela.dyn`` for a load at the link address; any other type is refused."""
    section = elf.get_section_by_name(".rela.dyn")
    if section is None or section["sh_size"] == 0:
        return
    if section["sh_type"] != "SHT_RELA" or section["sh_entsize"] != 24:
        raise InvalidImage(f"{path}: .rela.dyn is not a table of 24-byte RELA entries")
    relative = RELATIVE_TYPES[image.isa]
    buffers: dict[int, bytearray] = {}
    for offset, info, addend in struct.iter_unpack("<QQq", section.data()):
        if info & 0xFFFFFFFF != relative:
            # As the kernel's own early relocation code: only RELATIVE entries are applied;
            # any other (R_*_NONE padding, a symbol reference to an undefined weak symbol)
            # keeps the linked bytes.
            image.skipped_relocations += 1
            continue
        seg = _segment_for(image, offset, 8)
        if seg is None:
            raise InvalidImage(f"{path}: relocation at {offset:#x} is outside every segment")
        buf = buffers.get(id(seg))
        if buf is None:
            buf = buffers[id(seg)] = bytearray(seg.data)
        end = offset - seg.vaddr + 8
        if end > len(buf):
            buf.extend(bytes(end - len(buf)))
        buf[end - 8:end] = (addend & ((1 << 64) - 1)).to_bytes(8, "little")
        image.relocations += 1
    for seg in image.segments:
        if id(seg) in buffers:
            seg.data = bytes(buffers[id(seg)])


def read_image(path: str | Path, isa: str | None = None) -> Image:
    """Parse a static ELF image; ``isa``, if given, must match its machine."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise InvalidImage(f"cannot read {path}: {exc.strerror}") from None
    try:
        elf = ELFFile(io.BytesIO(raw))
        machine = str(elf["e_machine"])
        if elf.elfclass != 64 or not elf.little_endian:
            raise InvalidImage(f"{path}: not a 64-bit little-endian ELF image")
        if elf["e_type"] not in ("ET_EXEC", "ET_DYN"):
            raise InvalidImage(f"{path}: not an executable image ({elf['e_type']})")
        found = ELF_MACHINES.get(machine)
        if found is None:
            raise InvalidImage(f"{path}: unsupported machine {machine}")
        if isa is not None and found != isa:
            raise InvalidImage(f"{path} is a {found} image, not {isa}")
        image = Image(str(path), found, elf["e_entry"])
        for seg in elf.iter_segments():
            if seg["p_type"] == "PT_INTERP":
                raise InvalidImage(f"{path}: dynamically linked images are not supported")
            if seg["p_type"] == "PT_LOAD" and seg["p_memsz"]:
                image.segments.append(
                    Segment(seg["p_vaddr"], seg.data(), seg["p_memsz"], _perms(seg["p_flags"]))
                )
        if elf["e_type"] == "ET_DYN":
            _apply_relative(elf, image, path)
        _symbols(elf, image)
    except (ELFError, ValueError, KeyError) as exc:
        raise InvalidImage(f"{path}: not a readable ELF image ({exc})") from None
    return image


def load_image(space: AddressSpace, image: Image) -> None:
    """Map the image's segments and record its functions in ``space``."""
    pages: dict[int, str] = {}
    for seg in image.segments:
        for p in range(page_down(seg.vaddr), page_up(seg.vaddr + seg.memsz), PAGE):
            pages[p] = "".join(sorted(set(pages.get(p, "") + seg.perms), key="rwx".index))
    for start, size, perms in _runs(pages):
        space.map(start, size, perms)
    for seg in image.segments:
        space.cpu.mem_write(seg.vaddr, seg.data)
    for addr, size, name in image.function_symbols:
        space.add_function(name, addr, size)


def _runs(pages: dict[int, str]) -> list[tuple[int, int, str]]:
    """Coalesce pages into maximal runs of adjacent pages with equal permissions."""
    runs: list[tuple[int, int, str]] = []
    for p, perms in sorted(pages.items()):
        if runs and runs[-1][0] + runs[-1][1] == p and runs[-1][2] == perms:
            runs[-1] = (runs[-1][0], runs[-1][1] + PAGE, perms)
        else:
            runs.append((p, PAGE, perms))
    return runs
