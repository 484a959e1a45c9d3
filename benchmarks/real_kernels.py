"""Load the downloaded Debian kernels and probe their self-contained library functions.

For each ISA with a ``/work/kernels/vmlinux-<isa>`` (or a path given as ``ISA=PATH``), load
the image at its link address and, for each library function of :data:`CALLS` the kernel
has, call it unprobed (checking the result against a Python reference), then register a
kprobe with a counting pre-handler at every instruction boundary in turn
(:func:`kprobe_ref.arch.instruction_starts`), call again and unregister.  A probed call
must give the unprobed result and leave the buffers as the unprobed call left them, and the
probe must be hit exactly as often as the CPU executed that instruction unprobed; the
function's bytes must be identical afterwards.  Prints one table row per function.  Never
part of the test suite.

Buffers live in memory from :meth:`Machine.alloc`; ``bsearch``, ``sort`` and ``sort_r``
get a four-instruction comparison function for ``int`` written into a page of its own (the
kernel has no exported one), so their own code, callbacks made through the file's retpoline
or branch-target sequences included, is the kernel's.  ``current`` is ``init_task``, as on
CPU 0 during early boot: x86_64 reads it from the per-CPU area, whose template the image
loads at address 0 (``%gs`` base 0); arm64 from ``sp_el0`` and riscv64 from ``tp``, which
are set here.  Functions built with the per-task stack protector read the canary through
``current`` and fault at a low address without it.

    python -m benchmarks.real_kernels [ISA=PATH ...]
"""

from __future__ import annotations

import struct
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from kprobe_ref import ProbeBuilder
from kprobe_ref.arch import instruction_starts
from kprobe_ref.errors import KprobeError
from kprobe_ref.manager import register_kprobe, unregister_kprobe
from kprobe_ref.sim.elf import Image
from kprobe_ref.sim.machine import Machine
from kprobe_ref.sim.space import PAGE
from kprobe_ref.sim.unicorn_cpu import UnicornCpu

ISAS = ("x86_64", "aarch64", "riscv64")
MASK64 = (1 << 64) - 1

CMP_INT: dict[str, bytes] = {
    # mov eax, [rdi]; sub eax, [rsi]; ret
    "x86_64": bytes.fromhex("8b07" "2b06" "c3"),
    # ldr w0, [x0]; ldr w1, [x1]; sub w0, w0, w1; ret
    "aarch64": bytes.fromhex("000040b9" "210040b9" "0000014b" "c0035fd6"),
    # lw a0, 0(a0); lw a1, 0(a1); subw a0, a0, a1; ret
    "riscv64": bytes.fromhex("03250500" "83a50500" "3b05b540" "67800000"),
}
"""``int cmp(const void *a, const void *b)``: ``*a - *b`` (the values are small)."""


class Cmp:
    """An argument that is the address of the :data:`CMP_INT` function."""


Arg = int | bytes | Cmp
Check = Callable[[int, Sequence[int]], bool]
"""Whether a result is right, given the buffers' addresses."""


@dataclass(frozen=True)
class Call:
    """One call of a kernel function: arguments, the check of its result, and the
    buffer contents it must leave (``None``: unchanged)."""

    name: str
    args: tuple[Arg, ...]
    check: Check
    after: tuple[bytes, ...] | None = None


def ints(*values: int) -> bytes:
    return struct.pack(f"<{len(values)}i", *values)


def equals(value: int, bits: int = 64) -> Check:
    mask = (1 << bits) - 1
    return lambda r, _b: r & mask == value & mask


def sign(value: int) -> Check:
    """An ``int`` result whose sign is ``value``'s (kernels return -1/1 or a difference)."""
    def check(r: int, _b: Sequence[int]) -> bool:
        r32 = (r & 0xFFFF_FFFF) - ((r & 0x8000_0000) << 1)
        return (r32 > 0) - (r32 < 0) == value
    return check


def points_at(buf: int, offset: int) -> Check:
    return lambda r, bufs: r == bufs[buf] + offset


UNSORTED = [40, -7, 1000, 3, 12, 0, 41, 9]
SORTED = sorted(UNSORTED)

CALLS: tuple[Call, ...] = (
    Call("gcd", (462, 1071), equals(21)),
    Call("int_sqrt", (1_000_000,), equals(1000)),
    Call("lcm", (21, 6), equals(42)),
    Call("int_pow", (3, 13), equals(3**13)),
    Call("strlen", (b"kprobes at every instruction\0",), equals(28)),
    Call("strnlen", (b"kprobes\0", 4), equals(4)),
    Call("strcmp", (b"probe\0", b"prober\0"), sign(-1)),
    Call("memcmp", (b"kprobes", b"kprobeZ", 7), sign(1)),
    Call("memchr", (b"kretprobe", ord("p"), 9), points_at(0, 4)),
    Call("bsearch", (ints(12), ints(*SORTED), len(SORTED), 4, Cmp()),
         points_at(1, 4 * SORTED.index(12))),
    Call("sort_r", (ints(*UNSORTED), len(UNSORTED), 4, Cmp(), 0, 0), lambda _r, _b: True,
         (ints(*SORTED),)),
    Call("sort", (ints(*UNSORTED), len(UNSORTED), 4, Cmp(), 0), lambda _r, _b: True,
         (ints(*SORTED),)),
    Call("memcpy", (bytes(24), b"copied by the kernel ...!", 24), points_at(0, 0),
         (b"copied by the kernel ...", b"copied by the kernel ...!")),
    Call("memset", (bytes(20), 0x6B, 20), points_at(0, 0), (b"k" * 20,)),
    Call("kstrtouint", (b"4294967295\0", 10, bytes(4)), equals(0, 32),
         (b"4294967295\0", b"\xff" * 4)),
    Call("hex2bin", (bytes(4), b"c0ffee42", 4), equals(0, 32),
         (bytes.fromhex("c0ffee42"), b"c0ffee42")),
    Call("crc32_le", (0xFFFF_FFFF, b"123456789", 9), equals(0x340BC6D9, 32)),
    Call("glob_match", (b"k*probe?\0", b"kretprobes\0"), equals(1, 8)),
)
"""The library calls run, in order; a kernel without the symbol skips it."""


@dataclass
class Bench:
    """A loaded kernel, a buffer arena and the comparison function's address."""

    m: Machine
    image: Image
    arena: int
    cmp: int


def set_current(m: Machine, image: Image) -> None:
    """Point arm64's ``sp_el0`` or riscv64's ``tp`` at ``init_task`` (x86_64's ``current``
    comes from the per-CPU template at address 0)."""
    task = image.symbols.get("init_task")
    if task is None:
        return
    if m.isa == "riscv64":
        m.cpu.reg_write("x4", task)
    elif m.isa == "aarch64" and isinstance(m.cpu, UnicornCpu):
        from unicorn import arm64_const

        m.cpu.uc.reg_write(arm64_const.UC_ARM64_REG_SP_EL0, task)


def setup(isa: str, path: Path) -> Bench:
    m = Machine(isa)
    image = m.load_elf(path)
    set_current(m, image)
    cmp = m.kernel.find_free(0x3000_0000, 1 << 47, PAGE)
    assert cmp is not None
    m.map(cmp, PAGE, "rx")
    m.write(cmp, CMP_INT[isa])
    return Bench(m, image, m.alloc(0x1000), cmp)


def invoke(b: Bench, call: Call, addr: int) -> tuple[int, tuple[bytes, ...]]:
    """Call once from freshly written buffers; the result and the buffers afterwards."""
    args: list[int] = []
    bufs: list[tuple[int, int]] = []
    for arg in call.args:
        if isinstance(arg, bytes):
            at = b.arena + 0x100 * len(bufs)
            b.m.write(at, arg.ljust(0x100, b"\xee"))
            bufs.append((at, len(arg)))
            args.append(at)
        else:
            args.append(b.cmp if isinstance(arg, Cmp) else arg & MASK64)
    ret = b.m.call(addr, *args)
    return ret, tuple(b.m.read(a, n) for a, n in bufs)


@dataclass
class Row:
    isa: str
    name: str
    reference: bool
    insns: int = 0
    probed: int = 0
    equal: int = 0
    counts: int = 0
    refused: int = 0
    identical: bool = False
    seconds: float = 0.0
    note: str = ""


def measure(b: Bench, isa: str, call: Call) -> Row:
    """Probe every instruction of one function; the figures of its table row."""
    m, addr = b.m, b.image.functions[call.name]
    size = next(n for a, n, _ in b.image.function_symbols if a == addr)
    code = m.read(addr, size)
    starts, stuck = instruction_starts(isa, addr, code)
    counts = m.watch(set(starts))
    before = dict(counts)
    t = time.perf_counter()
    want = invoke(b, call, addr)
    bufs = [b.arena + 0x100 * i for i in range(sum(isinstance(a, bytes) for a in call.args))]
    inputs = tuple(a for a in call.args if isinstance(a, bytes))
    ok = call.check(want[0], bufs) and want[1] == (call.after or inputs)
    row = Row(isa, call.name, ok, len(starts),
              note=f"undecodable at +{stuck - addr:#x}" if stuck is not None else "")
    executed = {s: counts.get(s, 0) - before.get(s, 0) for s in starts}
    reasons: dict[str, int] = {}
    for s in starts:
        hits: list[int] = []
        try:
            p = register_kprobe(m.manager, m.points, ProbeBuilder().with_symbol_addr(s)
                                .with_pre_handler(lambda _d, _r, h=hits: h.append(1)))
        except KprobeError as exc:
            row.refused += 1
            key = str(exc).split(": ")[-1][:60]
            reasons[key] = reasons.get(key, 0) + 1
            continue
        row.probed += 1
        try:
            row.equal += invoke(b, call, addr) == want
        finally:
            unregister_kprobe(m.manager, m.points, p)
        row.counts += len(hits) == executed[s]
    row.identical = m.read(addr, size) == code
    row.seconds = time.perf_counter() - t
    if reasons:
        row.note = "; ".join(f"{n}x {r}" for r, n in reasons.items())
    return row


HEADER = (f"{'isa':8} {'function':10} {'ref':3} {'insns':>5} {'probed':>6} {'equal':>5} "
          f"{'hits=exec':>9} {'refused':>7} {'bytes':5} {'s':>5}  note")


def format_row(r: Row) -> str:
    return (f"{r.isa:8} {r.name:10} {'ok' if r.reference else 'BAD':3} {r.insns:5} "
            f"{r.probed:6} {r.equal:5} {r.counts:9} {r.refused:7} "
            f"{'same' if r.identical else 'DIFF':5} {r.seconds:5.1f}  {r.note}")


def main(argv: list[str]) -> int:
    paths = {isa: Path(f"/work/kernels/vmlinux-{isa}") for isa in ISAS}
    paths.update({a.split("=", 1)[0]: Path(a.split("=", 1)[1]) for a in argv})
    rows: list[Row] = []
    for isa, path in paths.items():
        if not path.exists():
            print(f"{isa}: {path} missing, skipped")
            continue
        t = time.perf_counter()
        b = setup(isa, path)
        img = b.image
        print(f"{isa}: {path} loaded in {time.perf_counter() - t:.1f} s, "
              f"{len(img.function_symbols)} functions ({len(img.functions)} names), "
              f"{img.relocations} RELATIVE relocations applied")
        for call in CALLS:
            if call.name in img.functions:
                rows.append(measure(b, isa, call))
                print("  " + format_row(rows[-1]), flush=True)
            else:
                print(f"  {call.name}: not in this kernel")
    print()
    print(HEADER)
    for r in rows:
        print(format_row(r))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
