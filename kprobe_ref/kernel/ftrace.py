"""Function entries as a booted kernel has them: the ftrace boot conversion.

A kernel built with dynamic ftrace has a patchable site at the entry of nearly every
function, and lists the sites in the ``__mcount_loc`` table (between the symbols
``__start_mcount_loc`` and ``__stop_mcount_loc``; on arm64 and riscv64 the compiler's
``__patchable_function_entries`` sections are linked there).  The file holds what the
compiler emitted; ``ftrace_init`` rewrites every site before any probe can be placed:

- **x86_64**: the file has ``call __fentry__`` (``e8 rel32``, five bytes); the booted text
  has the five-byte NOP ``0f 1f 44 00 00`` (``ftrace_make_nop``).  The record address
  (``rec->ip``) is the site itself; ``MCOUNT_INSN_SIZE`` is 5.
- **aarch64** (6.1, ``-fpatchable-function-entry=2``): the file has two ``nop``; the booted
  text has ``mov x9, x30`` in the first and ``nop`` in the second (``ftrace_init_nop``).
  ``ftrace_call_adjust`` makes the record address the *second* word, where ``bl`` to the
  ftrace trampoline goes when tracing is on; ``MCOUNT_INSN_SIZE`` is 4.
- **riscv64** (6.12, ``-fpatchable-function-entry=4`` or ``=2``): the file has four
  ``c.nop`` (or two ``nop``); the booted text has two four-byte ``nop``
  (``ftrace_make_nop`` writes ``auipc``/``jalr``-sized words); the record address is the
  start of the area and ``MCOUNT_INSN_SIZE`` is 8.

The table entries are absolute addresses.  In an ``ET_DYN`` image linked with
``--no-apply-dynamic-relocs`` (arm64) the file holds zeros there and the
``R_*_RELATIVE`` relocations give the values; they are read here from memory the loader
has already relocated.  A zero entry is padding between object files and is skipped, as
``ftrace_process_locs`` skips it; entries are sorted and each site is converted once.  An
entry whose bytes are not what the compiler emits is left as it is and reported (Linux
calls ``ftrace_bug`` there and disables ftrace).

Nothing else of the boot-time rewriting (alternatives, jump labels, static calls,
paravirt, IBT sealing) is applied: see ``docs/real-kernels.md``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kprobe_ref.errors import KprobeError

if TYPE_CHECKING:
    from kprobe_ref.manager import ProbeManager

__all__ = [
    "ABIS",
    "FtraceAbi",
    "FtraceSite",
    "FtraceTable",
    "adjust_kprobe_addr",
    "boot_convert",
    "convert_site",
    "ftrace_call",
    "is_endbr",
    "mcount_entries",
]

START, STOP = "__start_mcount_loc", "__stop_mcount_loc"
X86_CALL = 0xE8
X86_NOP5 = bytes.fromhex("0f1f440000")
A64_NOP = bytes.fromhex("1f2003d5")
A64_MOV_X9_LR = bytes.fromhex("e9031eaa")
"""``mov x9, x30`` (``orr x9, xzr, x30``): the link register saved for the trampoline."""
RV_CNOP4 = bytes.fromhex("0100") * 4
RV_NOP2 = bytes.fromhex("13000000") * 2
"""Two ``addi x0, x0, 0``: what riscv64's ``ftrace_make_nop`` writes over the area."""


@dataclass(frozen=True)
class FtraceAbi:
    """One ISA's ftrace call-site conventions."""

    isa: str
    window: int
    """Bytes from the table entry that the boot conversion reads and may rewrite."""
    insn_size: int
    """``MCOUNT_INSN_SIZE``: the bytes at the record address that become the call."""
    rec_offset: int
    """Record address (``rec->ip``) minus the table entry (``ftrace_call_adjust``)."""
    kprobes_on_ftrace: bool
    """Whether the kernel has ``CONFIG_KPROBES_ON_FTRACE``: a kprobe at a record address
    goes through ftrace, not a breakpoint.  Without it such a kprobe is refused
    (``check_ftrace_location`` returns ``-EINVAL``)."""
    pre_pc_delta: int
    """``regs->pc`` minus the record address while pre-handlers run under ftrace (x86
    shows the PC an ``int3`` at the site would leave: one byte on)."""
    link: str | None
    """The register the site's call leaves its return address in (riscv64 calls with
    ``t0`` so ``ra`` survives); ``None``: pushed on the stack (x86_64)."""


ABIS: dict[str, FtraceAbi] = {
    "x86_64": FtraceAbi("x86_64", 5, 5, 0, True, 1, None),
    "aarch64": FtraceAbi("aarch64", 8, 4, 4, False, 0, "x30"),
    "riscv64": FtraceAbi("riscv64", 8, 8, 0, True, 0, "t0"),
}
"""The ISAs whose kernels are built with patchable function entries here."""


@dataclass(frozen=True)
class FtraceSite:
    """One converted call site."""

    entry: int
    """The table entry: where the compiler's bytes start."""
    address: int
    """The record address (``rec->ip``): where ftrace patches its call, and where a kprobe
    goes through ftrace on an ISA that has kprobes on ftrace."""
    before: bytes
    """The file's bytes at ``entry`` (``window`` bytes)."""
    after: bytes
    """The booted bytes at ``entry``."""


@dataclass
class FtraceTable:
    """The ftrace sites of one loaded kernel image."""

    abi: FtraceAbi
    sites: dict[int, FtraceSite] = field(default_factory=dict)
    """Converted sites by record address."""
    entries: int = 0
    """Nonzero table entries read (duplicates included)."""
    padding: int = 0
    """Zero entries skipped."""
    unconverted: list[tuple[int, str]] = field(default_factory=list)
    """``(entry, why)`` of entries whose bytes were not a compiler's call site."""
    changed: int = 0
    """Sites whose bytes the conversion changed (the rest already held the booted
    form)."""

    @property
    def addresses(self) -> list[int]:
        """The record addresses, sorted."""
        return sorted(self.sites)

    def site(self, addr: int) -> FtraceSite | None:
        """The site whose record address is ``addr``."""
        return self.sites.get(addr)


def mcount_entries(symbols: dict[str, int], read: Callable[[int, int], bytes]
                   ) -> tuple[list[int], int] | None:
    """The nonzero entries of ``__mcount_loc`` (sorted, duplicates kept) and the count of
    zero ones, read through ``read(addr, size)`` from relocated memory; ``None`` when the
    image has no such table."""
    lo, hi = symbols.get(START), symbols.get(STOP)
    if lo is None or hi is None or hi <= lo:
        return None
    raw = read(lo, (hi - lo) // 8 * 8)
    words = [w for (w,) in struct.iter_unpack("<Q", raw)]
    nonzero = sorted(w for w in words if w)
    return nonzero, len(words) - len(nonzero)


def _x86(entry: int, code: bytes, fentry: int | None) -> tuple[int, bytes] | str:
    if code[:5] == X86_NOP5:
        return entry, X86_NOP5
    if code[0] != X86_CALL:
        return f"{code[:5].hex()} is neither call __fentry__ nor the five-byte NOP"
    target = (entry + 5 + int.from_bytes(code[1:5], "little", signed=True)) & ((1 << 64) - 1)
    if fentry is not None and target != fentry:
        return f"call to {target:#x}, not __fentry__ at {fentry:#x}"
    return entry, X86_NOP5


def _aarch64(entry: int, code: bytes, _fentry: int | None) -> tuple[int, bytes] | str:
    second = code[4:8]
    if code[:4] in (A64_NOP, A64_MOV_X9_LR) and second == A64_NOP:
        return entry + 4, A64_MOV_X9_LR + A64_NOP
    return f"{code.hex()} is not two patchable nops"


def _riscv64(entry: int, code: bytes, _fentry: int | None) -> tuple[int, bytes] | str:
    if code in (RV_CNOP4, RV_NOP2):
        return entry, RV_NOP2
    return f"{code.hex()} is not a patchable nop area (four c.nop or two nop)"


_CONVERT: dict[str, Callable[[int, bytes, int | None], tuple[int, bytes] | str]] = {
    "x86_64": _x86,
    "aarch64": _aarch64,
    "riscv64": _riscv64,
}


def convert_site(isa: str, entry: int, code: bytes, fentry: int | None = None
                 ) -> FtraceSite | str:
    """What ``ftrace_init`` makes of the ``window`` bytes ``code`` at table entry
    ``entry``: the site, or why the bytes are not a call site.  ``fentry`` is the address
    of ``__fentry__`` (x86_64), when the image names it."""
    out = _CONVERT[isa](entry, code, fentry)
    if isinstance(out, str):
        return out
    rec, after = out
    return FtraceSite(entry, rec, bytes(code), after)


def boot_convert(isa: str, symbols: dict[str, int], read: Callable[[int, int], bytes],
                 write: Callable[[int, bytes], None]) -> FtraceTable | None:
    """Read the image's ``__mcount_loc`` table and rewrite each listed site as
    ``ftrace_init`` does, through ``read``/``write`` (host access to the loaded image).
    ``None`` when the ISA has no ftrace conventions here or the image has no table."""
    abi = ABIS.get(isa)
    found = mcount_entries(symbols, read) if abi is not None else None
    if abi is None or found is None:
        return None
    entries, padding = found
    table = FtraceTable(abi, entries=len(entries), padding=padding)
    fentry = symbols.get("__fentry__")
    for entry in dict.fromkeys(entries):
        try:
            code = read(entry, abi.window)
        except KprobeError as exc:  # an entry outside the loaded image
            table.unconverted.append((entry, f"not readable: {exc}"))
            continue
        site = convert_site(isa, entry, code, fentry)
        if isinstance(site, str):
            table.unconverted.append((entry, site))
            continue
        if site.after != code:
            write(entry, site.after)
            table.changed += 1
        table.sites[site.address] = site
    return table


def ftrace_call(isa: str, site: int, target: int) -> bytes:
    """The bytes ``ftrace_make_call`` writes at record address ``site`` to call
    ``target``: x86_64 ``call rel32``; riscv64 ``auipc t0, hi`` + ``jalr t0, lo(t0)``.
    Both reach +-2 GiB; a target out of reach is a ``ValueError`` (the caller places the
    trampoline near the text)."""
    delta = target - site
    if isa == "x86_64":
        rel = delta - 5
        if not -(1 << 31) <= rel < 1 << 31:
            raise ValueError(f"{target:#x} is out of call reach of {site:#x}")
        return bytes([X86_CALL]) + rel.to_bytes(4, "little", signed=True)
    if isa == "riscv64":
        lo = ((delta & 0xFFF) ^ 0x800) - 0x800
        hi = (delta - lo) >> 12
        if not -(1 << 19) <= hi < 1 << 19:
            raise ValueError(f"{target:#x} is out of auipc/jalr reach of {site:#x}")
        auipc = ((hi & 0xFFFFF) << 12) | (5 << 7) | 0x17
        jalr = ((lo & 0xFFF) << 20) | (5 << 15) | (5 << 7) | 0x67
        return struct.pack("<II", auipc, jalr)
    raise ValueError(f"{isa} has no kprobes on ftrace")


ENDBR64 = 0xFA1E0FF3
"""``f3 0f 1e fa`` read as a little-endian word."""
ENDBR_POISON = 0xD6401F0F
"""``0f 1f 40 d6``: the four-byte NOP an IBT kernel seals unused ENDBR64s with."""


def is_endbr(word: int) -> bool:
    """Linux's ``is_endbr`` on an IBT kernel: ``endbr64``, ``endbr32`` (one bit apart) or
    the sealing poison."""
    return word == ENDBR_POISON or word & ~0x0100_0000 == ENDBR64


def adjust_kprobe_addr(m: ProbeManager, addr: int) -> int:
    """x86_64's ``arch_adjust_kprobe_addr``: a kprobe at the first byte of a function that
    starts with ENDBR goes 4 bytes on, past the landing pad (which must stay intact for
    indirect calls and is never where the function's work starts); everything else, and
    every other ISA and uprobes, is left where it is.  Linux splits the address into
    symbol and offset with kallsyms, so a bare function address moves as ``sym+0`` does."""
    if m.pid is not None or m.arch.name != "x86_64":
        return addr
    func = m.aux.function_containing(addr, None)
    if func is None or func[0] != addr or func[1] < 4:
        return addr
    try:
        word = int.from_bytes(m.aux.read_memory(addr, 4, None), "little")
    except KprobeError:
        return addr
    return addr + 4 if is_endbr(word) else addr
