"""The addresses Linux refuses to kprobe in a kernel image, computed from the image.

Pinned to Linux v6.12 (``kernel/kprobes.c``); every rule below names the function it mirrors.

**The blacklist** (``populate_kprobe_blacklist``, run once at boot), in Linux's order:

1. ``nokprobe``: every address in the table between ``__start_kprobe_blacklist`` and
   ``__stop_kprobe_blacklist`` (one word per ``NOKPROBE_SYMBOL``; on arm64, linked with
   ``--no-apply-dynamic-relocs``, the words are zero in the file and come from the
   ``R_AARCH64_RELATIVE`` entries of ``.rela.dyn`` for those slots) blacklists
   ``[addr, addr + size)``, ``size`` being the extent of the symbol containing ``addr`` as
   kallsyms computes it: up to the next symbol's address (``kprobe_add_ksym_blacklist``,
   ``kallsyms_lookup_size_offset``).  Addresses outside kernel text are skipped.
2. ``kprobes-text``: ``__kprobes_text_start..__kprobes_text_end``, symbol by symbol
   (``kprobe_add_area_blacklist``); the weak ``arch_within_kprobe_blacklist`` checks the
   same range directly.
3. ``noinstr-text``: ``__noinstr_text_start..__noinstr_text_end``.
4. ``arch_populate_kprobe_blacklist``: the areas of ``kprobe_ref.arch.<isa>.kernel``
   (x86 ``entry-text``; arm64 ``entry-text``, ``irqentry-text``, ``hyp-text``,
   ``hyp-idmap-text``; riscv and loongarch ``irqentry-text``).

**Suffixed symbols** (``within_kprobe_blacklist``): an address whose kallsyms symbol has a
``.`` in its name (``foo.cold``, ``foo.part.0``, ``foo.isra.0``) is blacklisted when the
address of the base name ``foo`` is (cause ``suffixed-symbol``).

**Reserved sites** (``check_kprobe_address_safe``, after the blacklist):

- ``jump-label``: the instruction at a ``__jump_table`` entry's code address
  (``jump_label_text_reserved``; entries are PC-relative, 16 bytes);
- ``static-call``: the call at a ``.static_call_sites`` entry (``static_call_text_reserved``;
  x86 only; entries are PC-relative, 8 bytes; sites in init text are skipped, as Linux marks
  them ``init`` and frees them);
- ``bug``: the trap instruction of a ``__bug_table`` entry, BUG and WARN alike (``find_bug``;
  ``bug_addr_disp`` is PC-relative; the entry size, 12 bytes with
  ``CONFIG_DEBUG_BUGVERBOSE`` or 8 without, is the one under which every entry lands on a
  trap instruction);
- ``cfi-preamble``: any address whose kallsyms symbol is named ``__cfi_*`` or ``__pfx_*``
  (``is_cfi_preamble_symbol``).

**Init text** (``core_kernel_text``): ``init-text``, an address in
``_sinittext.._einittext``, which a booted kernel has freed.

Not modelled: ftrace sites (``check_ftrace_location`` moves a probe to the ftrace call
instead of refusing it), the gate area (``in_gate_area_no_mm``, outside kernel text), module
text, and ``arm64``'s skipping of ``__hyp_idmap_text`` on a kernel running in hyp mode (VHE):
the image cannot tell, so the area is always listed.  Linux v6.1 differs from v6.12 only in
``is_cfi_preamble_symbol``, which it lacks; a 6.1 image built with GCC has no ``__cfi_`` or
``__pfx_`` symbols, so the rules give the same answer.
"""

from __future__ import annotations

import bisect
import importlib
import itertools
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from kprobe_ref.kernel.elfscan import STT_FILE, STT_SECTION, KernelElf, Symbol

__all__ = ["LINUX_VERSION", "Blacklist", "Kallsyms", "build_blacklist", "kernel_blacklist"]

LINUX_VERSION = "6.12"
"""The Linux version whose ``kernel/kprobes.c`` the rules follow."""

RANGE_CAUSES = ("nokprobe", "kprobes-text", "noinstr-text", "entry-text", "irqentry-text",
                "hyp-text", "hyp-idmap-text", "suffixed-symbol", "init-text")
SITE_CAUSES = ("jump-label", "static-call", "bug")
CAUSES: tuple[str, ...] = (*RANGE_CAUSES, *SITE_CAUSES, "cfi-preamble")
"""Every cause, in the order Linux checks them (the first that holds is reported)."""


class Kallsyms:
    """The symbols kallsyms would list, sorted by address, and its two lookups."""

    def __init__(self, symbols: Iterable[Symbol]) -> None:
        kept = sorted((s for s in symbols if _kallsyms_keeps(s)), key=lambda s: s.addr)
        self.addrs = [s.addr for s in kept]
        self.names = [s.name for s in kept]
        self.distinct = sorted(set(self.addrs))
        self.by_name: dict[str, int] = {}
        for s in kept:
            if s.name not in self.by_name or s.addr < self.by_name[s.name]:
                self.by_name[s.name] = s.addr

    def containing(self, addr: int) -> tuple[int, int, str] | None:
        """``(start, size, name)`` of the symbol holding ``addr``: the last symbol at or
        below it (the first listed of several at one address), its size the distance to the
        next higher symbol address (``kallsyms_lookup_size_offset``, ``lookup_symbol_name``)."""
        i = bisect.bisect_right(self.addrs, addr) - 1
        if i < 0:
            return None
        start = self.addrs[i]
        while i > 0 and self.addrs[i - 1] == start:
            i -= 1
        j = bisect.bisect_right(self.distinct, start)
        if j >= len(self.distinct):
            return None
        return start, self.distinct[j] - start, self.names[i]


def _kallsyms_keeps(s: Symbol) -> bool:
    """Whether ``scripts/kallsyms`` keeps the symbol: named code and data symbols, no
    mapping symbols (``$x``, ``$d``), local labels (``.L``) or CRCs."""
    if s.kind in (STT_SECTION, STT_FILE) or s.shndx >= 0xFF00:
        return False
    return not s.name.startswith(("$", ".L", "__crc_", "__kstrtab_", "__ksymtabns_"))


@dataclass
class Blacklist:
    """Disjoint blacklisted ranges with their causes, reserved sites, and CFI preambles."""

    starts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    causes: list[str] = field(default_factory=list)
    sites: dict[int, str] = field(default_factory=dict)
    preambles: list[tuple[int, int]] = field(default_factory=list)
    """Sorted ``[start, end)`` of ``__cfi_``/``__pfx_`` symbols."""
    entries: dict[str, int] = field(default_factory=dict)
    """How many entries each rule added (``nokprobe``: table entries; areas: symbols)."""
    skipped: dict[str, int] = field(default_factory=dict)
    """Entries a rule met but Linux skips: an address outside kernel text
    (``kernel_text_address``), such as arm64's SDEI trampolines in ``.rodata.text``."""
    _site_addrs: list[int] = field(default_factory=list, repr=False)

    def cause(self, addr: int) -> str | None:
        """Why Linux refuses a kprobe at ``addr`` (one of :data:`CAUSES`), or ``None``."""
        i = bisect.bisect_right(self.starts, addr) - 1
        if i >= 0 and addr < self.ends[i]:
            return self.causes[i]
        site = self.sites.get(addr)
        if site is not None:
            return site
        j = bisect.bisect_right(self.preambles, (addr, 1 << 64)) - 1
        if j >= 0 and addr < self.preambles[j][1]:
            return "cfi-preamble"
        return None

    def overlaps(self, start: int, end: int) -> bool:
        """Whether any blacklisted address lies in ``[start, end)`` (a quick filter)."""
        i = bisect.bisect_left(self.ends, start + 1)
        if i < len(self.starts) and self.starts[i] < end:
            return True
        j = bisect.bisect_right(self.preambles, (end, 0))
        return j > 0 and self.preambles[j - 1][1] > start

    def sites_in(self, start: int, end: int) -> dict[int, str]:
        """The reserved sites in ``[start, end)``."""
        if len(self._site_addrs) != len(self.sites):
            self._site_addrs = sorted(self.sites)
        lo = bisect.bisect_left(self._site_addrs, start)
        hi = bisect.bisect_left(self._site_addrs, end, lo)
        return {a: self.sites[a] for a in self._site_addrs[lo:hi]}

    def count_by_cause(self) -> dict[str, int]:
        """Disjoint blacklisted ranges per cause, and reserved sites per cause."""
        out: dict[str, int] = {}
        for c in self.causes:
            out[c] = out.get(c, 0) + 1
        for c in self.sites.values():
            out[c] = out.get(c, 0) + 1
        if self.preambles:
            out["cfi-preamble"] = len(self.preambles)
        return out


# -- building -----------------------------------------------------------------------------------


def _word(kelf: KernelElf, addr: int, relocs: dict[int, int]) -> int:
    if addr in relocs:
        return relocs[addr]
    return int(struct.unpack("<Q", kelf.read(addr, 8))[0])


class _Builder:
    def __init__(self, kelf: KernelElf, syms: dict[str, int], kallsyms: Kallsyms) -> None:
        self.kelf, self.syms, self.ks = kelf, syms, kallsyms
        self.ranges: list[tuple[int, int, int, str]] = []  # (start, end, priority, cause)
        self.entries: dict[str, int] = {}
        self.skipped: dict[str, int] = {}
        text = [(syms.get("_stext"), syms.get("_etext")),
                (syms.get("_sinittext"), syms.get("_einittext"))]
        self.text = [(a, b) for a, b in text if a is not None and b is not None]

    def kernel_text(self, addr: int) -> bool:
        """``kernel_text_address`` at boot: core text or init text."""
        return any(a <= addr < b for a, b in self.text)

    def add_ksym(self, entry: int, cause: str) -> int:
        """``kprobe_add_ksym_blacklist``: returns the size added, or -1 when refused."""
        if not self.kernel_text(entry):
            self.skipped[cause] = self.skipped.get(cause, 0) + 1
            return -1
        found = self.ks.containing(entry)
        if found is None:
            return -1
        _start, size, _name = found
        if size:
            self.ranges.append((entry, entry + size, CAUSES.index(cause), cause))
        self.entries[cause] = self.entries.get(cause, 0) + 1
        return size

    def add_area(self, prefix: str, cause: str) -> None:
        """``kprobe_add_area_blacklist`` between ``<prefix>_start`` and ``<prefix>_end``."""
        lo, hi = self.syms.get(f"{prefix}_start"), self.syms.get(f"{prefix}_end")
        if lo is None or hi is None:
            return
        entry = lo
        while entry < hi:
            got = self.add_ksym(entry, cause)
            if got < 0:
                return
            entry += got or 1

    def nokprobe_table(self, rtype: int) -> None:
        lo, hi = self.syms.get("__start_kprobe_blacklist"), self.syms.get("__stop_kprobe_blacklist")
        if lo is None or hi is None:
            return
        relocs = self.kelf.relative_relocations(rtype, lo, hi)
        for slot in range(lo, hi, 8):
            self.add_ksym(_word(self.kelf, slot, relocs), "nokprobe")


def build_blacklist(kelf: KernelElf, symbols: list[Symbol] | None = None) -> Blacklist:
    """Compute the blacklist of the image (see the module text for the rules)."""
    symbols = kelf.symbols() if symbols is None else symbols
    syms: dict[str, int] = {}
    for s in symbols:
        syms.setdefault(s.name, s.addr)
    ks = Kallsyms(symbols)
    arch = importlib.import_module(f"kprobe_ref.arch.{kelf.isa}.kernel")
    b = _Builder(kelf, syms, ks)
    b.nokprobe_table(arch.RELATIVE_RELOCATION)
    b.add_area("__kprobes_text", "kprobes-text")
    b.add_area("__noinstr_text", "noinstr-text")
    for prefix, cause in arch.BLACKLIST_AREAS:
        b.add_area(prefix, cause)
    bl = Blacklist(entries=b.entries, skipped=b.skipped)
    base = _disjoint(b.ranges)
    _load(bl, base)
    suffixed = _suffixed(ks, bl)
    inits = [(a, b_, CAUSES.index("init-text"), "init-text")
             for a, b_ in [(syms.get("_sinittext"), syms.get("_einittext"))]
             if a is not None and b_ is not None]
    _load(bl, _disjoint(b.ranges + suffixed + inits))
    bl.sites = _sites(kelf, syms)
    bl.preambles = _preambles(ks)
    return bl


def kernel_blacklist(path: str | Path) -> Blacklist:
    """The blacklist of the kernel image at ``path``."""
    kelf = KernelElf(path)
    try:
        return build_blacklist(kelf)
    finally:
        kelf.close()


def _load(bl: Blacklist, segs: list[tuple[int, int, str]]) -> None:
    bl.starts = [s for s, _, _ in segs]
    bl.ends = [e for _, e, _ in segs]
    bl.causes = [c for _, _, c in segs]


def _disjoint(ranges: list[tuple[int, int, int, str]]) -> list[tuple[int, int, str]]:
    """Split overlapping ``(start, end, priority, cause)`` ranges into disjoint segments,
    each with the cause of the lowest priority number covering it; adjacent segments of one
    cause are merged."""
    points = sorted({p for s, e, _, _ in ranges for p in (s, e)})
    by_start = sorted(ranges)
    out: list[tuple[int, int, str]] = []
    active: list[tuple[int, int, int, str]] = []
    k = 0
    for a, b in itertools.pairwise(points):
        while k < len(by_start) and by_start[k][0] <= a:
            active.append(by_start[k])
            k += 1
        active = [r for r in active if r[1] > a]
        if not active:
            continue
        cause = min(active, key=lambda r: r[2])[3]
        if out and out[-1][1] == a and out[-1][2] == cause:
            out[-1] = (out[-1][0], b, cause)
        else:
            out.append((a, b, cause))
    return out


def _suffixed(ks: Kallsyms, bl: Blacklist) -> list[tuple[int, int, int, str]]:
    """``within_kprobe_blacklist``'s second look: symbols ``base.suffix`` whose base's
    address is blacklisted."""
    out = []
    prio = CAUSES.index("suffixed-symbol")
    for i, name in enumerate(ks.names):
        dot = name.find(".")
        if dot <= 0:
            continue
        base = ks.by_name.get(name[:dot])
        if base is None or bl.cause(base) is None:
            continue
        found = ks.containing(ks.addrs[i])
        if found is not None and found[2] == name and found[1]:
            out.append((found[0], found[0] + found[1], prio, "suffixed-symbol"))
    return out


def _relative_entries(kelf: KernelElf, lo: int, hi: int, size: int) -> list[int]:
    """The addresses named by the first (PC-relative ``s32``) field of each ``size``-byte
    entry in ``[lo, hi)``."""
    if hi <= lo:
        return []
    raw = kelf.read(lo, hi - lo)
    return [lo + off + struct.unpack_from("<i", raw, off)[0] for off in range(0, hi - lo, size)]


def _sites(kelf: KernelElf, syms: dict[str, int]) -> dict[int, str]:
    def table(name: str) -> tuple[int, int]:
        return syms.get(f"__start_{name}", 0), syms.get(f"__stop_{name}", 0)

    sites: dict[int, str] = {}
    for addr in _bug_sites(kelf, *table("__bug_table")):
        sites.setdefault(addr, "bug")
    init = (syms.get("_sinittext", 0), syms.get("_einittext", 0))
    for addr in _relative_entries(kelf, *table("static_call_sites"), 8):
        if not init[0] <= addr < init[1]:
            sites.setdefault(addr, "static-call")
    for addr in _relative_entries(kelf, *table("__jump_table"), 16):
        sites[addr] = "jump-label"  # checked before static calls and BUG sites
    return sites


_TRAPS: dict[str, tuple[bytes, ...]] = {
    "x86_64": (b"\x0f\x0b",),
    "aarch64": (),  # brk #imm: checked by mask below
    "riscv64": (b"\x73\x00\x10\x00", b"\x02\x90"),
    "loongarch64": (),
}


def _is_trap(kelf: KernelElf, addr: int) -> bool:
    try:
        code = kelf.read(addr, 4) if kelf.isa != "x86_64" else kelf.read(addr, 2)
    except Exception:
        return False
    if kelf.isa == "aarch64":
        return int.from_bytes(code, "little") & 0xFFE0001F == 0xD4200000
    if kelf.isa == "loongarch64":
        return int.from_bytes(code, "little") & 0xFFFF8000 == 0x002A0000
    return any(code.startswith(t) for t in _TRAPS[kelf.isa])


def _bug_sites(kelf: KernelElf, lo: int, hi: int) -> list[int]:
    """``find_bug``'s addresses: of the candidate entry sizes, the one under which every
    entry's address is a trap instruction."""
    for size in (12, 8):
        if (hi - lo) % size:
            continue
        addrs = _relative_entries(kelf, lo, hi, size)
        if addrs and all(_is_trap(kelf, a) for a in addrs[:64]):
            return addrs
    return []


def _preambles(ks: Kallsyms) -> list[tuple[int, int]]:
    out = []
    for i, name in enumerate(ks.names):
        if name.startswith(("__cfi_", "__pfx_")):
            found = ks.containing(ks.addrs[i])
            if found is not None and found[2] == name and found[1]:
                out.append((found[0], found[0] + found[1]))
    return sorted(out)
