"""The kernel-shaped test images of kprobe_ref/corpus/vmlinux, on every ISA.

Each ISA has an ``ET_EXEC`` image (``vmlinux.elf``) and an ``ET_DYN`` one
(``vmlinux-pie.elf``, ``R_*_RELATIVE`` relocations unapplied in the file), both linked at
the ISA's kernel-half address with ``.data..percpu`` at virtual address 0 and two static
functions named ``helper`` (tools/build_kernel_images.py builds them).  Checked here:

* the manifest's hashes match the committed images and sources;
* the layout after :meth:`Machine.load_elf`: the per-CPU segment mapped at 0 and read by
  kernel-half code, the relocated pointer table pointing at the right functions (zero in
  the file of the ``ET_DYN`` image), every function in the kernel half, both ``helper``
  symbols kept and told apart by address;
* the kprobe blacklist read from the image: the ``NOKPROBE_SYMBOL`` table (its word, too, a
  relocation left unapplied in the ``ET_DYN`` file) and ``.kprobes.text``; the reserved
  sites of a ``__jump_table`` and a ``__bug_table`` entry;
* every function, called at its link address, gives what a Python reference gives;
* a counting kprobe on every instruction of every function, one at a time, leaves every
  result and buffer as the unprobed run left them and counts exactly as many hits as the
  CPU executed that instruction unprobed; every instruction of a blacklisted function, and
  every reserved site, is refused.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import pytest

from kprobe_ref import ProbeBuilder
from kprobe_ref.arch import instruction_starts
from kprobe_ref.corpus import corpus_dir, kernel_image
from kprobe_ref.errors import KprobeError, SymbolNotUnique
from kprobe_ref.manager import register_kprobe, unregister_kprobe
from kprobe_ref.sim.elf import Image
from kprobe_ref.sim.machine import Machine

ISAS = ("x86_64", "aarch64", "riscv64", "loongarch64")
KINDS = ("vmlinux", "vmlinux-pie")
LINK = {
    "x86_64": 0xFFFF_FFFF_8100_0000,
    "aarch64": 0xFFFF_8000_0800_0000,
    "riscv64": 0xFFFF_FFFF_8020_0000,
    "loongarch64": 0x9000_0000_0020_0000,
}
RELATIVE = {"x86_64": 8, "aarch64": 1027, "riscv64": 3, "loongarch64": 3}
IMAGES = corpus_dir() / "vmlinux"
MANIFEST: dict[str, Any] = json.loads((IMAGES / "manifest.json").read_text())
MASK64 = (1 << 64) - 1
MASK32 = (1 << 32) - 1
PERCPU_COUNTER = 40
"""The initial value of ``pcpu_counter`` (src/percpu.c)."""

PARAMS = [pytest.param(isa, kind, id=f"{isa}-{kind}") for isa in ISAS for kind in KINDS]


# ---------------------------------------------------------------- cases


@dataclass(frozen=True)
class Sym:
    """An argument that is the address of the named function."""

    name: str


Arg = int | bytes | Sym
"""An integer, a buffer holding those bytes (passed by address), or a function address."""


@dataclass(frozen=True)
class Case:
    """One call: the function (the ``nth`` of that name, by address), its arguments, the
    expected return value from the buffers' addresses (``None``: a ``void`` function), and
    the buffers' expected contents afterwards (``None``: unchanged)."""

    func: str
    args: tuple[Arg, ...]
    want: Callable[[Sequence[int]], int] | None
    after: tuple[bytes, ...] | None = None
    nth: int = 0
    bits: int = 64


def const(value: int) -> Callable[[Sequence[int]], int]:
    """A return value independent of where the buffers are."""
    return lambda _bufs: value


def at(buf: int, offset: int) -> Callable[[Sequence[int]], int]:
    """A pointer into buffer ``buf``."""
    return lambda bufs: bufs[buf] + offset


def ints(*values: int) -> bytes:
    """An array of C ``int``."""
    return struct.pack(f"<{len(values)}i", *values)


def _memcmp(a: bytes, b: bytes, n: int) -> int:
    return next((x - y for x, y in zip(a[:n], b[:n], strict=True) if x != y), 0)


def _strcmp(a: bytes, b: bytes) -> int:
    x, y = a.split(b"\0")[0], b.split(b"\0")[0]
    return (x > y) - (x < y)


def _bsearch(key: int, values: list[int]) -> Callable[[Sequence[int]], int]:
    return at(1, 4 * values.index(key)) if key in values else const(0)


STRINGS = (b"", b"a", b"hello", b"kprobes at every instruction")
PAIRS = ((462, 1071), (0, 5), (5, 0), (17, 13), (1 << 40, 3 << 20), (MASK64, 3))
SORTED = [-7, 0, 3, 9, 12, 40, 41, 1000]


def cases() -> list[Case]:
    """Every call the tests make, with its Python reference result."""
    out: list[Case] = []
    out += [Case("gcd", p, const(math.gcd(*p))) for p in PAIRS]
    out += [Case("lcm", p, const(math.lcm(*p) & MASK64)) for p in PAIRS[:4]]
    out += [Case("int_sqrt", (x,), const(math.isqrt(x)))
            for x in (0, 1, 2, 15, 16, 1_000_000, MASK64)]
    out += [Case("int_pow", (b, e), const(pow(b, e, 1 << 64)))
            for b, e in ((3, 5), (2, 63), (7, 30), (5, 0), (0, 0))]
    out += [Case("math_helper", (x,), const(x * 3 + 3)) for x in (0, 7)]
    out += [Case("string_helper", (x,), const(((x ^ 0x5A) << 1) + 5)) for x in (0, 7)]
    out += [Case("helper", (x,), const(x * 3 + 1), nth=0) for x in (0, 7)]
    out += [Case("helper", (x,), const((x ^ 0x5A) << 1), nth=1) for x in (0, 7)]
    out += [Case("strlen", (s + b"\0",), const(len(s))) for s in STRINGS]
    out += [Case("strnlen", (s + b"\0", n), const(min(len(s), n)))
            for s in STRINGS for n in (0, 3)]
    for a, b in ((b"abc", b"abd"), (b"abc", b"abc"), (b"b", b"abc"), (b"", b"x")):
        out.append(Case("strcmp", (a + b"\0", b + b"\0"), const(_strcmp(a, b) & MASK32),
                        bits=32))
    for a, b, n in ((b"abcd", b"abzd", 4), (b"abcd", b"abzd", 2), (b"\xff", b"\x01", 1)):
        out.append(Case("memcmp", (a, b, n), const(_memcmp(a, b, n) & MASK32), bits=32))
    for s, c in ((b"hello", ord("l")), (b"hello", ord("z")), (b"\x00\xff", 0x1FF)):
        i = s.find(bytes([c & 0xFF]))
        out.append(Case("memchr", (s, c, len(s)), at(0, i) if i >= 0 else const(0)))
    for values in ([5, -1, 3, 3, 0], [9, 8, 7, 6, 5, 4, 3, 2, 1], [1]):
        out.append(Case("sort", (ints(*values), len(values), 4, Sym("cmp_int"),
                                 Sym("swap_words")), None, (ints(*sorted(values)),)))
    out += [Case("bsearch", (ints(k), ints(*SORTED), len(SORTED), 4, Sym("cmp_int")),
                 _bsearch(k, SORTED)) for k in (-7, 12, 1000, 5)]
    out += [Case("cmp_int", (ints(a), ints(b)), const(((a > b) - (a < b)) & MASK32), bits=32)
            for a, b in ((1, 2), (2, 2), (-5, -6))]
    out.append(Case("swap_words", (ints(1, 2), ints(3, 4), 8), None,
                    (ints(3, 4), ints(1, 2))))
    ops: list[Callable[[int, int], int]] = [math.gcd, math.lcm, lambda a, b: a + b,
                                            lambda a, b: a - b]
    out += [Case("call_op", (i, 12, 18), const(ops[i](12, 18) & MASK64)) for i in range(4)]
    out += [Case("op_add", (MASK64, 2), const(1)), Case("op_sub", (1, 2), const(MASK64))]
    out += [Case("pcpu_add_return", (v,), const((PERCPU_COUNTER + v) & MASK64))
            for v in (2, -50)]
    out.append(Case("pcpu_name_len", (), const(len("percpu-area"))))
    out.append(Case("kernel_entry", (), None))
    out += [Case("nokprobe_add", (5, 6), const(17)), Case("kprobes_text_mul", (5, 6), const(31))]
    out += [Case("traced_add", (2, 3), const(5)), Case("traced_add", (MASK64, 1), const(0))]
    out += [Case("checked_div", (a, b), const(a // b)) for a, b in ((17, 5), (MASK64, 7))]
    return out


CASES = cases()


# ---------------------------------------------------------------- running


@dataclass
class Loaded:
    """A machine with one image loaded and a buffer area."""

    m: Machine
    image: Image
    arena: int
    percpu: bytes


def load(isa: str, kind: str) -> Loaded:
    """A fresh strict machine with the image loaded at its link address."""
    m = Machine(isa, strict=True)
    image = m.load_elf(kernel_image(isa, kind))
    percpu = next(s for s in image.segments if s.vaddr == 0)
    return Loaded(m, image, m.alloc(0x1000), percpu.data)


def address(img: Image, name: str, nth: int = 0) -> int:
    """The ``nth`` function called ``name``, by address."""
    return img.functions_named(name)[nth]


def invoke(ld: Loaded, case: Case) -> tuple[int | None, tuple[bytes, ...]]:
    """Call one case from a fresh per-CPU area; returns the result (masked to the
    function's width, ``None`` for ``void``) and every buffer's contents afterwards."""
    ld.m.write(0, ld.percpu)
    args: list[int] = []
    bufs: list[tuple[int, int]] = []
    for arg in case.args:
        if isinstance(arg, bytes):
            addr = ld.arena + 0x100 * len(bufs)
            ld.m.write(addr, arg.ljust(0x100, b"\xee"))
            bufs.append((addr, len(arg)))
            args.append(addr)
        elif isinstance(arg, Sym):
            args.append(address(ld.image, arg.name))
        else:
            args.append(arg & MASK64)
    ret = ld.m.call(address(ld.image, case.func, case.nth), *args)
    value = None if case.want is None else ret & ((1 << case.bits) - 1)
    return value, tuple(ld.m.read(a, n) for a, n in bufs)


def expected(ld: Loaded, case: Case) -> tuple[int | None, tuple[bytes, ...]]:
    """What the Python reference says :func:`invoke` returns."""
    addrs = [ld.arena + 0x100 * i
             for i in range(sum(isinstance(a, bytes) for a in case.args))]
    value = None if case.want is None else case.want(addrs)
    before = tuple(a for a in case.args if isinstance(a, bytes))
    return value, before if case.after is None else case.after


@cache
def file_bytes(isa: str, kind: str) -> bytes:
    return kernel_image(isa, kind).read_bytes()


# ---------------------------------------------------------------- manifest


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_manifest_pins_the_toolchain_and_every_file() -> None:
    assert MANIFEST["generator"] == "tools/build_kernel_images.py"
    assert MANIFEST["zig_version"]
    assert set(MANIFEST["images"]) == {f"{i}/{k}.elf" for i in ISAS for k in KINDS}
    for rel, rec in MANIFEST["images"].items():
        data = (IMAGES / rel).read_bytes()
        assert (_sha(data), len(data)) == (rec["sha256"], rec["size"]), rel
        assert rec["commands"][-1][:4] == ["python", "-m", "ziglang", "ld.lld"]
        assert int(rec["link_address"], 16) == LINK[rec["isa"]]
    for rel, rec in MANIFEST["sources"].items():
        assert _sha((IMAGES / rel).read_bytes()) == rec["sha256"], rel
    on_disk = {str(p.relative_to(IMAGES)) for p in (IMAGES / "src").iterdir()}
    assert on_disk <= set(MANIFEST["sources"])


# ---------------------------------------------------------------- layout


def _file_word(isa: str, kind: str, img: Image, addr: int) -> int:
    """The 64-bit word the file holds for ``addr`` (its segment's file bytes)."""
    from elftools.elf.elffile import ELFFile

    with kernel_image(isa, kind).open("rb") as fh:
        for seg in ELFFile(fh).iter_segments():
            if seg["p_type"] == "PT_LOAD" and seg["p_vaddr"] <= addr < seg["p_vaddr"] + \
                    seg["p_filesz"]:
                off = seg["p_offset"] + addr - seg["p_vaddr"]
                return int.from_bytes(file_bytes(isa, kind)[off:off + 8], "little")
    raise AssertionError(f"{addr:#x} not in the file")


@pytest.mark.parametrize(("isa", "kind"), PARAMS)
def test_per_cpu_segment_at_zero_is_mapped_and_read_by_kernel_half_code(
        isa: str, kind: str) -> None:
    ld = load(isa, kind)
    img, m = ld.image, ld.m
    percpu = [s for s in img.segments if s.vaddr == 0]
    assert len(percpu) == 1 and percpu[0].perms == "rw"
    assert m.kernel.has(0, len(ld.percpu), "r")
    name = img.symbols["pcpu_name"]
    assert name < 0x100 and m.read(name, 12) == b"percpu-area\0"
    assert m.call(img.functions["pcpu_name_len"]) == len("percpu-area")
    counter = img.symbols["pcpu_counter"]
    assert m.call(img.functions["pcpu_add_return"], 2) == PERCPU_COUNTER + 2
    assert int.from_bytes(m.read(counter, 8), "little") == PERCPU_COUNTER + 2
    stop = m.kernel.return_stop
    assert stop is not None and m.kernel.forbidden(stop) is not None
    assert not 0 <= stop < len(ld.percpu)


@pytest.mark.parametrize(("isa", "kind"), PARAMS)
def test_text_lies_in_the_kernel_half_at_the_link_address(isa: str, kind: str) -> None:
    img = load(isa, kind).image
    text = min(s.vaddr for s in img.segments if "x" in s.perms)
    assert text == LINK[isa] == img.symbols["_stext"]
    assert all(a >= LINK[isa] for a, _, _ in img.function_symbols)
    assert all(a + n <= img.symbols["_etext"] for a, n, _ in img.function_symbols)


@pytest.mark.parametrize(("isa", "kind"), PARAMS)
def test_pointer_table_points_at_its_functions_after_load(isa: str, kind: str) -> None:
    ld = load(isa, kind)
    img, m = ld.image, ld.m
    table = img.symbols["ops_table"]
    targets = [address(img, n) for n in ("gcd", "lcm", "op_add", "op_sub")]
    words = [int.from_bytes(m.read(table + 8 * i, 8), "little") for i in range(4)]
    assert words == targets
    pointers = {"pcpu_counter_ptr": "pcpu_counter", "pcpu_name_ptr": "pcpu_name"}
    for ptr, obj in pointers.items():
        assert int.from_bytes(m.read(img.symbols[ptr], 8), "little") == img.symbols[obj]
    in_file = [_file_word(isa, kind, img, table + 8 * i) for i in range(4)]
    if kind == "vmlinux":
        assert img.relocations == 0 and in_file == targets
    else:
        # --no-apply-dynamic-relocs: the words are zero in the file; only the RELATIVE
        # entries of .rela.dyn give them their values.
        assert in_file == [0, 0, 0, 0]
        assert img.relocations >= 6 and img.skipped_relocations == 0
    assert [m.call(img.functions["call_op"], i, 12, 18) for i in range(4)] == [
        6, 36, 30, (12 - 18) & MASK64]


@pytest.mark.parametrize(("isa", "kind"), PARAMS)
def test_relocation_entries_are_all_relative(isa: str, kind: str) -> None:
    from elftools.elf.elffile import ELFFile

    with kernel_image(isa, kind).open("rb") as fh:
        elf = ELFFile(fh)
        assert elf["e_type"] == ("ET_EXEC" if kind == "vmlinux" else "ET_DYN")
        assert not any(s["p_type"] == "PT_INTERP" for s in elf.iter_segments())
        rela = elf.get_section_by_name(".rela.dyn")
        types = [] if rela is None else [r["r_info_type"] for r in rela.iter_relocations()]
    assert (types == []) == (kind == "vmlinux")
    assert set(types) <= {RELATIVE[isa]}


@pytest.mark.parametrize(("isa", "kind"), PARAMS)
def test_duplicate_static_names_are_both_kept_by_address(isa: str, kind: str) -> None:
    ld = load(isa, kind)
    img, m = ld.image, ld.m
    first, second = img.functions_named("helper")
    assert first < second
    assert sorted(img.addresses["helper"]) == [first, second]
    assert {a for a, _, n in m.kernel.functions if n == "helper"} == {first, second}
    sizes = {a: n for a, n, name in img.function_symbols if name == "helper"}
    for addr in (first, second):
        assert m.kernel.function_containing(addr + sizes[addr] - 1) == (addr, sizes[addr])
    assert (m.call(first, 7), m.call(second, 7)) == (22, (7 ^ 0x5A) << 1)
    with pytest.raises(SymbolNotUnique):
        register_kprobe(m.manager, m.points, ProbeBuilder().with_symbol("helper"))
    hits: list[int] = []
    p = register_kprobe(m.manager, m.points, ProbeBuilder().with_symbol_addr(second)
                        .with_pre_handler(lambda _d, _r: hits.append(1)))
    assert m.call(img.functions["string_helper"], 7) == ((7 ^ 0x5A) << 1) + 5
    assert m.call(img.functions["math_helper"], 7) == 7 * 3 + 3
    unregister_kprobe(m.manager, m.points, p)
    assert hits == [1]


BLACKLISTED = {"nokprobe_add": "nokprobe", "kprobes_text_mul": "kprobes-text"}
"""Functions the image's kprobe blacklist covers, with the cause."""


@pytest.mark.parametrize(("isa", "kind"), PARAMS)
def test_blacklist_comes_from_the_nokprobe_table_and_kprobes_text(isa: str, kind: str) -> None:
    ld = load(isa, kind)
    img, bl = ld.image, ld.m.kprobe_blacklist
    assert bl is not None
    table = img.symbols["__start_kprobe_blacklist"]
    assert img.symbols["__stop_kprobe_blacklist"] == table + 8
    func = img.functions["nokprobe_add"]
    assert _file_word(isa, kind, img, table) == (func if kind == "vmlinux" else 0)
    assert int.from_bytes(ld.m.read(table, 8), "little") == func
    for name, cause in BLACKLISTED.items():
        addr = img.functions[name]
        assert bl.cause(addr) == bl.cause(addr + img.sizes[name] - 1) == cause, name
    assert not any(bl.overlaps(a, a + n) for a, n, name in img.function_symbols
                   if name not in BLACKLISTED)


TRAPS = {"x86_64": {b"\x0f\x0b"}, "riscv64": {b"\x73\x00\x10\x00"}}
JUMP_NOPS = {"x86_64": bytes.fromhex("0f1f440000"), "aarch64": bytes.fromhex("1f2003d5"),
             "riscv64": bytes.fromhex("13000000"), "loongarch64": bytes.fromhex("00004003")}


@pytest.mark.parametrize(("isa", "kind"), PARAMS)
def test_jump_label_and_bug_table_entries_reserve_their_instructions(isa: str,
                                                                    kind: str) -> None:
    ld = load(isa, kind)
    img, m, bl = ld.image, ld.m, ld.m.kprobe_blacklist
    assert bl is not None
    add, div = img.functions["traced_add"], img.functions["checked_div"]
    jump = bl.sites_in(add, add + img.sizes["traced_add"])
    bug = bl.sites_in(div, div + img.sizes["checked_div"])
    assert list(jump.values()) == ["jump-label"] and list(bug.values()) == ["bug"]
    assert bl.sites == {**jump, **bug}
    (site,) = jump
    assert m.read(site, len(JUMP_NOPS[isa])) == JUMP_NOPS[isa]  # the disabled default
    (trap,) = bug
    word = int.from_bytes(m.read(trap, 4), "little")
    if isa == "aarch64":
        assert word & 0xFFE0001F == 0xD4200000  # brk
    elif isa == "loongarch64":
        assert word & 0xFFFF8000 == 0x002A0000  # break
    else:
        assert m.read(trap, len(next(iter(TRAPS[isa])))) in TRAPS[isa]
    assert m.call(add, 2, 3) == 5  # the key is off: the no-op falls through
    for addr, cause in {site: "jump-label", trap: "bug"}.items():
        assert not _refused(ld, addr, cause)


# ---------------------------------------------------------------- calls


def test_every_function_has_cases() -> None:
    for isa in ISAS:
        for kind in KINDS:
            img = load_image_only(isa, kind)
            names = {(n, img.functions_named(n).index(a)) for a, _, n in img.function_symbols}
            covered = {(c.func, c.nth) for c in CASES}
            assert names == covered, (isa, kind, names ^ covered)


@cache
def load_image_only(isa: str, kind: str) -> Image:
    from kprobe_ref.sim.elf import read_image

    return read_image(kernel_image(isa, kind), isa)


@pytest.mark.parametrize(("isa", "kind"), PARAMS)
def test_every_function_matches_the_python_reference(isa: str, kind: str) -> None:
    ld = load(isa, kind)
    got = [(c, invoke(ld, c), expected(ld, c)) for c in CASES]
    wrong = [(c.func, c.nth, c.args, have, want) for c, have, want in got if have != want]
    assert not wrong


# ---------------------------------------------------------------- every instruction


def _refused(ld: Loaded, addr: int, cause: str) -> list[str]:
    """A kprobe at ``addr`` must be refused, naming ``cause``."""
    try:
        p = register_kprobe(ld.m.manager, ld.m.points, ProbeBuilder().with_symbol_addr(addr))
    except KprobeError as exc:
        return [] if f"({cause})" in str(exc) else [f"{addr:#x} refused otherwise: {exc}"]
    unregister_kprobe(ld.m.manager, ld.m.points, p)
    return [f"{addr:#x} accepted though reserved ({cause})"]


def _probe_function(ld: Loaded, addr: int, size: int, calls: list[Case],
                    blacklisted: str | None = None) -> list[str]:
    """Probe each instruction of one function in turn; the problems found."""
    m = ld.m
    code = m.read(addr, size)
    starts, stuck = instruction_starts(m.isa, addr, code)
    problems = [] if stuck is None else [f"undecodable bytes at {stuck:#x}"]
    if blacklisted is not None:
        return problems + [p for s in starts for p in _refused(ld, s, blacklisted)]
    bl = m.kprobe_blacklist
    reserved = bl.sites_in(addr, addr + size) if bl is not None else {}
    for s, cause in reserved.items():
        problems += _refused(ld, s, cause)
    starts = tuple(s for s in starts if s not in reserved)
    counts = m.watch(set(starts))
    before = dict(counts)
    plain = [invoke(ld, c) for c in calls]
    executed = {s: counts.get(s, 0) - before.get(s, 0) for s in starts}
    for s in starts:
        hits: list[int] = []
        try:
            p = register_kprobe(m.manager, m.points, ProbeBuilder().with_symbol_addr(s)
                                .with_pre_handler(lambda _d, _r, h=hits: h.append(1)))
        except KprobeError as exc:
            problems.append(f"{s:#x} (+{s - addr:#x}) refused: {exc}")
            continue
        try:
            probed = [invoke(ld, c) for c in calls]
        finally:
            unregister_kprobe(m.manager, m.points, p)
        if probed != plain:
            problems.append(f"{s:#x} (+{s - addr:#x}): {probed} != {plain}")
        if len(hits) != executed[s]:
            problems.append(f"{s:#x} (+{s - addr:#x}): {len(hits)} hits, "
                            f"{executed[s]} executions")
    if m.read(addr, size) != code:
        problems.append("function bytes changed")
    return problems


def _probe_all(isa: str, kind: str, only: str | None) -> list[str]:
    """Probe every instruction of every function (or of ``only``); the problems found."""
    ld = load(isa, kind)
    problems: list[str] = []
    for addr, size, name in ld.image.function_symbols:
        if only not in (None, name):
            continue
        nth = ld.image.functions_named(name).index(addr)
        calls = [c for c in CASES if (c.func, c.nth) == (name, nth)]
        found = _probe_function(ld, addr, size, calls, BLACKLISTED.get(name))
        problems += [f"{name}#{nth}: {p}" for p in found]
    return problems


@pytest.mark.parametrize(("isa", "kind"), PARAMS)
def test_a_kprobe_on_every_instruction_changes_no_result(isa: str, kind: str) -> None:
    problems = _probe_all(isa, kind, None)
    assert not problems, "\n".join(problems)


def test_x86_rip_relative_per_cpu_access_from_the_kernel_half_is_probed() -> None:
    """``pcpu_add_return`` reads and writes the per-CPU segment at virtual address 0 with
    RIP-relative operands from kernel-half text: the slot goes where Linux's module area
    is, within 2 GiB of both (``docs/slots.md``), and every instruction is probed."""
    for kind in KINDS:
        assert not _probe_all("x86_64", kind, "pcpu_add_return")
