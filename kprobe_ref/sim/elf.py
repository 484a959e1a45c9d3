"""Loading static ELF images into an address space.

Only what a relocation-free static image needs: the ``PT_LOAD`` segments (file bytes, then
zeros up to ``p_memsz``, with the segment's permissions) and the symbol table (functions with
their sizes, and data objects).  Anything else, a dynamic or relocatable object, another
ISA, a file that is not ELF, is refused with :class:`~kprobe_ref.errors.InvalidImage`.
"""

from __future__ import annotations

import io
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
            image.symbols[sym.name] = sym["st_value"]
            image.addresses.setdefault(sym.name, []).append(sym["st_value"])
            image.sizes[sym.name] = sym["st_size"]
            if kind == "STT_FUNC" and sym["st_size"] > 0:
                image.functions[sym.name] = sym["st_value"]


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
        if elf["e_type"] != "ET_EXEC":
            raise InvalidImage(f"{path}: not a static executable ({elf['e_type']})")
        found = ELF_MACHINES.get(machine)
        if found is None:
            raise InvalidImage(f"{path}: unsupported machine {machine}")
        if isa is not None and found != isa:
            raise InvalidImage(f"{path} is a {found} image, not {isa}")
        image = Image(str(path), found, elf["e_entry"])
        for seg in elf.iter_segments():
            if seg["p_type"] == "PT_DYNAMIC" or seg["p_type"] == "PT_INTERP":
                raise InvalidImage(f"{path}: dynamically linked images are not supported")
            if seg["p_type"] == "PT_LOAD" and seg["p_memsz"]:
                image.segments.append(
                    Segment(seg["p_vaddr"], seg.data(), seg["p_memsz"], _perms(seg["p_flags"]))
                )
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
    run_start, run_end, run_perms = 0, 0, ""
    for p, perms in sorted(pages.items()):  # one mapping per run of like pages
        if p == run_end and perms == run_perms:
            run_end += PAGE
            continue
        if run_end > run_start:
            space.map(run_start, run_end - run_start, run_perms)
        run_start, run_end, run_perms = p, p + PAGE, perms
    if run_end > run_start:
        space.map(run_start, run_end - run_start, run_perms)
    for seg in image.segments:
        space.cpu.mem_write(seg.vaddr, seg.data)
    for name, addr in image.functions.items():
        space.add_function(name, addr, image.sizes[name])
