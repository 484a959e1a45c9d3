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

__all__ = ["ELF_MACHINES", "MAX_ZERO_FILL", "Image", "load_image", "read_image",
           "validate_layout"]

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
    """Function symbols with a nonzero size, by name."""
    addresses: dict[str, list[int]] = field(default_factory=dict)
    """Every address of each name: local symbols of several files may share a name."""
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
    ftrace_sites: list[int] = field(default_factory=list)
    """The ftrace record addresses of a kernel image, sorted, once the machine has applied
    the boot conversion (:mod:`kprobe_ref.kernel.ftrace`); empty otherwise."""

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
            image.addresses.setdefault(sym.name, []).append(sym["st_value"])
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


MAX_ZERO_FILL = 1 << 28
"""Most zero-filled memory (``p_memsz - p_filesz`` summed over the ``PT_LOAD`` segments)
an image may ask for: 256 MiB, far above any kernel's ``.bss``.  With it, the memory a
load maps is bounded by the file's size plus this constant."""

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_PHDR = struct.Struct("<IIQQQQQQ")
_SHDR = struct.Struct("<IIQQQQIIQQ")
_PT_LOAD, _SHT_SYMTAB, _SHT_NOBITS, _SHT_DYNSYM = 1, 2, 8, 11
_SYM_SIZE = 24


def _table(raw: bytes, path: object, what: str, offset: int, count: int, entsize: int,
           want: int) -> list[bytes]:
    """The ``count`` entries of a header table, each ``want`` bytes, checked to lie in the
    file."""
    if count == 0:
        return []
    if entsize != want:
        raise InvalidImage(f"{path}: {what} entries are {entsize} bytes, not {want}")
    if offset + count * entsize > len(raw):
        raise InvalidImage(
            f"{path}: {what} table ({count} entries at {offset:#x}) runs past the end of the "
            f"file ({len(raw)} bytes)"
        )
    return [raw[offset + i * entsize: offset + (i + 1) * entsize] for i in range(count)]


def _check_segments(raw: bytes, path: object, phdrs: list[bytes]) -> None:
    zero_fill = 0
    for i, ph in enumerate(phdrs):
        p_type, _flags, offset, vaddr, _paddr, filesz, memsz, _align = _PHDR.unpack(ph)
        if offset + filesz > len(raw):
            raise InvalidImage(
                f"{path}: segment {i} has {filesz:#x} file bytes at offset {offset:#x}, past "
                f"the end of the file ({len(raw)} bytes)"
            )
        if p_type != _PT_LOAD:
            continue
        if memsz < filesz:
            raise InvalidImage(
                f"{path}: segment {i} has a memory size {memsz:#x} below its file size "
                f"{filesz:#x}"
            )
        if vaddr + memsz > 1 << 64:
            raise InvalidImage(
                f"{path}: segment {i} at {vaddr:#x} of size {memsz:#x} runs past the end of "
                "the 64-bit address space"
            )
        zero_fill += memsz - filesz
        if zero_fill > MAX_ZERO_FILL:
            raise InvalidImage(
                f"{path}: segments ask for {zero_fill:#x} bytes of zero-filled memory (at "
                f"most {MAX_ZERO_FILL:#x})"
            )


def _check_sections(raw: bytes, path: object, shdrs: list[bytes], shstrndx: int) -> None:
    if shdrs and shstrndx >= len(shdrs):
        raise InvalidImage(f"{path}: section name table index {shstrndx} is out of range")
    for i, sh in enumerate(shdrs):
        _name, sh_type, _flags, _addr, offset, size, link, _info, _align, entsize = (
            _SHDR.unpack(sh))
        if sh_type != _SHT_NOBITS and offset + size > len(raw):
            raise InvalidImage(
                f"{path}: section {i} has {size:#x} bytes at offset {offset:#x}, past the end "
                f"of the file ({len(raw)} bytes)"
            )
        if sh_type in (_SHT_SYMTAB, _SHT_DYNSYM) and (
            entsize != _SYM_SIZE or link >= len(shdrs)
        ):
            raise InvalidImage(
                f"{path}: symbol table section {i} has entry size {entsize} (not {_SYM_SIZE}) "
                f"or a string table index {link} out of range"
            )


def validate_layout(raw: bytes, path: object) -> None:
    """Check that every table and segment of a 64-bit little-endian ELF file lies inside
    the file and inside the address space, before anything is parsed or allocated.

    Refused with :class:`~kprobe_ref.errors.InvalidImage`: a header table or a section or
    segment whose bytes run past the end of the file, a loadable segment whose memory size
    is below its file size or whose end passes ``2**64``, and zero-fill beyond
    :data:`MAX_ZERO_FILL`.  Segments at address 0 and in the upper (kernel) half are legal.
    The work is linear in the file's size.  Files of another class or byte order are left
    to the parser, which names what they are."""
    if len(raw) < _EHDR.size or raw[:4] != b"\x7fELF":
        raise InvalidImage(f"{path}: not an ELF file")
    if raw[4] != 2 or raw[5] != 1:
        return
    (_ident, _type, _machine, _version, _entry, phoff, shoff, _flags, _ehsize, phentsize,
     phnum, shentsize, shnum, shstrndx) = _EHDR.unpack_from(raw)
    phdrs = _table(raw, path, "program header", phoff, phnum, phentsize, _PHDR.size)
    if shoff and shnum == 0 and shentsize == _SHDR.size and shoff + _SHDR.size <= len(raw):
        shnum = _SHDR.unpack_from(raw, shoff)[5]  # extended numbering: count in sh_size
    shdrs = _table(raw, path, "section header", shoff, shnum if shoff else 0, shentsize,
                   _SHDR.size)
    _check_segments(raw, path, phdrs)
    _check_sections(raw, path, shdrs, shstrndx)


def read_image(path: str | Path, isa: str | None = None) -> Image:
    """Parse a static ELF image; ``isa``, if given, must match its machine."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise InvalidImage(f"cannot read {path}: {exc.strerror}") from None
    validate_layout(raw, path)
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


def _page_runs(pages: dict[int, str]) -> list[tuple[int, int, str]]:
    """Runs of consecutive pages with equal permissions, as (start, size, perms): one
    mapping per run, so a large zero-filled segment costs one call, not one per page."""
    runs: list[tuple[int, int, str]] = []
    for p, perms in sorted(pages.items()):
        if runs and runs[-1][0] + runs[-1][1] == p and runs[-1][2] == perms:
            start, size, _ = runs[-1]
            runs[-1] = (start, size + PAGE, perms)
        else:
            runs.append((p, PAGE, perms))
    return runs


def load_image(space: AddressSpace, image: Image) -> None:
    """Map the image's segments and record its functions in ``space``."""
    pages: dict[int, str] = {}
    for seg in image.segments:
        for p in range(page_down(seg.vaddr), page_up(seg.vaddr + seg.memsz), PAGE):
            pages[p] = "".join(sorted(set(pages.get(p, "") + seg.perms), key="rwx".index))
    for start, size, perms in _page_runs(pages):
        space.map(start, size, perms)
    for seg in image.segments:
        space.cpu.mem_write(seg.vaddr, seg.data)
    for addr, size, name in image.function_symbols:
        space.add_function(name, addr, size)


