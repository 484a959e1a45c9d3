#!/usr/bin/env python3
"""Generate the committed pool of x86_64 instruction encodings for snippet property tests.

Output: ``tests/vectors/x86_64/pool.jsonl`` (one record per line) and
``tests/vectors/x86_64/pool.manifest.json``.  Regenerate from the repository root with::

    python tools/gen_x86_pool.py

Templates are written in **Intel syntax** (``.intel_syntax noprefix``) and assembled with
the LLVM integrated assembler shipped in the ``ziglang`` wheel::

    python -m ziglang cc -target x86_64-freestanding-none -c pool.S -o pool.o

Every instruction gets its own (non-``.L``) label, so its bytes are cut out of ``.text``
using the symbol table (pyelftools).  The split is cross-checked by decoding the whole
section with capstone (same boundaries, same count), and every instruction must decode to
exactly its assembled length with the mnemonic the template names.  Templates with a
RIP-relative operand (written ``[rip + DISP]``) are assembled twice with two different
displacements; the bytes that differ locate the disp32 field (``disp_offset``)
independently of capstone.  Rel32 branch templates target an undefined symbol, so their
displacement is a zero field covered by a relocation; this too is cross-checked.

Snippet environment (the contract between this pool and the tests that use it):

* Code is mapped at ``CODE_BASE`` (executable); straight-line records run until the end of
  the record.  The default unicorn x86_64 CPU model (Haswell in unicorn 2.1) is used.
* ``rbx`` and ``rsi`` both hold ``DATA_BASE``, the start of a 4096-byte read-write data
  buffer filled with random bytes.
* ``rsp`` holds ``STACK_TOP``; the stack mapping has 4096 bytes below it (>= 512 needed)
  and 4096 bytes above it.
* Every other general-purpose register, xmm0-xmm15 and the arithmetic flags
  (CF PF AF ZF SF OF) hold random values; DF, TF and AC are clear; MXCSR is 0x1f80.
* Records never write rbx, rsi, rsp or rip (nor their sub-registers), except that a
  ``stack`` record is a balanced push/pop sequence (2-3 instructions) that leaves rsp as it
  found it and only touches the 512 bytes below rsp.
* Explicit memory operands are ``[rbx + disp]`` / ``[rsi + disp]`` with ``0 <= disp < 0x800``
  (no index register), or ``[rip + disp32]``.  For RIP-relative records ``disp_offset`` is
  the byte offset of the disp32 inside the instruction and ``mem_size`` the access width;
  users rewrite the disp32 so that ``record_end + disp32`` lands inside the data buffer,
  aligned to ``mem_align`` when that is set (legacy-SSE 16-byte operands need 16).
  ``lea`` computes an address without accessing memory, and multi-byte ``nop`` /
  ``prefetch`` forms take an address operand that is never accessed.
* No division, traps, privileged or I/O instructions, no cpuid/rdtsc/rdrand, no string
  instructions, no x87, no popf of random values, no bt/bts/btr/btc with a register bit
  offset on memory (the offset can leave the buffer), no bsf/bsr (undefined result).
* Unicorn's VEX support does not zero bits 128-255 of the ymm destination; compare xmm
  registers only.

Branch templates (classes ``jcc_rel8``, ``jcc_rel32``, ``jmp_rel8``, ``jmp_rel32``,
``call_rel32``, ``ret``, ``call_reg``, ``jmp_reg``, ``loop_rel8``) carry a zero
displacement at ``rel_offset`` of ``rel_size`` bytes (target = record end + displacement);
``cc`` is the condition code 0-15 for jcc, and ``target_reg`` names the register holding
the target of ``call_reg``/``jmp_reg``.  ``loop_rel8`` records read and (except jrcxz)
decrement rcx, so they belong in branching snippets only.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import io
import json
import random
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import capstone
import capstone.x86_const as csx
import unicorn as _unicorn
import unicorn.x86_const as ux
from poolkit import Assembled, assemble_lines, label

# unicorn's bindings are only partially annotated; treat the module as dynamically typed.
unicorn: Any = _unicorn

REPO = Path(__file__).resolve().parent.parent
OUT_DIR = REPO / "tests" / "vectors" / "x86_64"
COMMAND = "python tools/gen_x86_pool.py"
ASSEMBLE_COMMAND = "python -m ziglang cc -target x86_64-freestanding-none -c pool.S -o pool.o"

CODE_BASE = 0x0100_0000
CODE_SIZE = 0x1_0000
DATA_BASE = 0x0200_0000
DATA_SIZE = 0x1000
STACK_BASE = 0x0300_0000
STACK_SIZE = 0x2000
STACK_TOP = STACK_BASE + 0x1000
STACK_SCRATCH = 512
RIP_TARGET_OFFSET = 0x400
MAX_DISP = 0x800
MXCSR = 0x1F80
ARITH_FLAGS = 0x8D5

DISP_PRIMARY = 0x100
DISP_PROBE = 0x7EADBEEF

BRANCH_CLASSES = (
    "jcc_rel8",
    "jcc_rel32",
    "jmp_rel8",
    "jmp_rel32",
    "call_rel32",
    "ret",
    "call_reg",
    "jmp_reg",
    "loop_rel8",
)
REL32_CLASSES = ("jcc_rel32", "jmp_rel32", "call_rel32")

CC_NAMES = ("o", "no", "b", "ae", "e", "ne", "be", "a", "s", "ns", "p", "np", "l", "ge", "le", "g")

FORBIDDEN_WRITE = frozenset({
    "rbx", "ebx", "bx", "bl", "bh", "rsi", "esi", "si", "sil",
    "rsp", "esp", "sp", "spl", "rip", "eip", "ip",
})
STACK_MNEMONICS = frozenset({"push", "pop", "pushfq", "popfq"})
UNALIGNED_OK = frozenset({"movdqu", "movups", "movupd", "lddqu"})

GPRS = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
        "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")
RANDOM_GPRS = tuple(r for r in GPRS if r not in ("rbx", "rsi", "rsp"))

# ---------------------------------------------------------------------------------------
# Templates
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Template:
    """One pool record before assembly: a class and 1-3 Intel-syntax instruction lines.

    A line may end in ``# mnemonic`` to name the expected capstone mnemonic explicitly
    (used for ``.byte`` encodings); ``DISP`` stands for a RIP-relative displacement.
    """

    cls: str
    lines: tuple[str, ...]
    cc: int | None = None
    target_reg: str | None = None



def _regs(prefix: tuple[str, ...], suffix: str) -> list[str]:
    """Return the writable registers of one width: legacy names then r8-r15."""
    return [*prefix, *(f"r{n}{suffix}" for n in range(8, 16))]


W64 = _regs(("rax", "rcx", "rdx", "rdi", "rbp"), "")
W32 = _regs(("eax", "ecx", "edx", "edi", "ebp"), "d")
W16 = _regs(("ax", "cx", "dx", "di", "bp"), "w")
W8 = _regs(("al", "cl", "dl", "dil", "bpl"), "b")
DEST = {64: W64, 32: W32, 16: W16, 8: W8}
SRC = {
    64: [*W64, "rbx", "rsi", "rsp"],
    32: [*W32, "ebx", "esi", "esp"],
    16: [*W16, "bx", "si", "sp"],
    8: [*W8, "bl", "sil", "spl"],
}
PTR = {8: "byte", 16: "word", 32: "dword", 64: "qword", 128: "xmmword"}
DISPS = (0x0, 0x8, 0x13, 0x7F, 0x80, 0x100, 0x2A4, 0x3F0, 0x555, 0x7E8)
ALIGNED_DISPS = (0x0, 0x10, 0x40, 0x80, 0x120, 0x300, 0x5F0, 0x7F0)


class Cycle:
    """Deterministic round-robin picker (independent of Python's random module)."""

    def __init__(self, items: list[str] | tuple[str, ...] | tuple[int, ...], step: int = 1):
        self.items = list(items)
        self.pos = 0
        self.step = step

    def next(self) -> Any:
        """Return the next item."""
        item = self.items[self.pos % len(self.items)]
        self.pos += self.step
        return item


def build_templates() -> list[Template]:
    """Return the full, ordered list of templates."""
    t: list[Template] = []

    def add(cls: str, *lines: str, cc: int | None = None, target: str | None = None) -> None:
        t.append(Template(cls, tuple(lines), cc, target))

    dst = {w: Cycle(DEST[w], 3) for w in DEST}
    src = {w: Cycle(SRC[w], 5) for w in SRC}
    disp = Cycle(DISPS, 3)
    base = Cycle(("rbx", "rsi"))
    adisp = Cycle(ALIGNED_DISPS, 3)

    def mem(width: int, d: int | None = None) -> str:
        dd = disp.next() if d is None else d
        b = base.next()
        return f"{PTR[width]} ptr [{b} + {dd:#x}]" if dd else f"{PTR[width]} ptr [{b}]"

    def rip(width: int) -> str:
        return f"{PTR[width]} ptr [rip + DISP]"

    imm_for = {8: 0x5A, 16: 0x1234, 32: 0x12345678, 64: -0x789ABCDF}
    widths = (8, 16, 32, 64)

    # ---- ALU ------------------------------------------------------------------------
    alu_ops = ("add", "sub", "and", "or", "xor", "cmp", "adc", "sbb", "test")
    for i, op in enumerate(alu_ops):
        w = widths[i % 4]
        add("alu", f"{op} {dst[w].next()}, {src[w].next()}")
        # full-width immediates and sign-extended imm8 (test has no imm8 form)
        w = widths[(i + 1) % 4]
        if i % 2 == 0:
            add("alu", f"{op} {dst[w].next()}, {imm_for[w]:#x}")
        else:
            add("alu", f"{op} {dst[w].next()}, {-3 if op != 'test' else 0x40}")
        # accumulator short forms
        if i % 3 == 0:
            acc = ("al", "ax", "eax", "rax")[i % 4]
            accw = (8, 16, 32, 64)[i % 4]
            add("alu", f"{op} {acc}, {imm_for[accw]:#x}")
        # reg, mem  /  mem, reg
        w = widths[i % 4]
        if op == "test":
            add("alu", f"test {mem(w)}, {src[w].next()}")
        else:
            add("alu", f"{op} {dst[w].next()}, {mem(w)}")
        w = widths[(i + 1) % 4]
        add("alu", f"{op} {mem(w)}, {src[w].next()}")
        # mem, imm8 and mem, imm16/32 (immediate after the displacement)
        w = widths[(i + 2) % 4]
        if i % 2 == 0:
            add("alu", f"{op} {mem(w)}, {0x7F if op == 'test' else -0x11}")
        if i % 2 == 1:
            w = widths[(i + 3) % 4]
            add("alu", f"{op} {mem(w, 0x400 + 8 * i)}, {imm_for[w]:#x}")
        # RIP-relative, alternate imm and reg forms
        w = widths[(i + 2) % 4]
        if i % 2 == 0:
            add("alu", f"{op} {rip(w)}, {imm_for[w]:#x}")
        elif op == "test":
            add("alu", f"test {rip(w)}, {src[w].next()}")
        else:
            add("alu", f"{op} {dst[w].next()}, {rip(w)}")
    add("alu", "{disp32} add eax, dword ptr [rbx + 0x10]")
    add("alu", "add ah, ch")
    add("alu", "sub r15, rsp")

    # ---- unary ------------------------------------------------------------------------
    for i, op in enumerate(("inc", "dec", "neg", "not")):
        for w in (widths[i], widths[(i + 1) % 4]):
            add("unary", f"{op} {dst[w].next()}")
        add("unary", f"{op} {mem(widths[i])}")
        add("unary", f"{op} {rip(widths[(i + 2) % 4])}")

    # ---- shifts and rotates --------------------------------------------------------------
    for i, op in enumerate(("rol", "ror", "rcl", "rcr", "shl", "shr", "sar")):
        add("shift", f"{op} {dst[widths[i % 4]].next()}, {(5 + i) % 8 + 1}")
        if i % 3 == 0:
            add("shift", f"{op} {dst[widths[(i + 1) % 4]].next()}, 1")
        add("shift", f"{op} {dst[widths[(i + 2) % 4]].next()}, cl")
        if i % 4 == 0:
            add("shift", f"{op} {mem(widths[(i + 3) % 4])}, {i + 2}")
        elif i % 4 == 1:
            add("shift", f"{op} {mem(widths[(i + 3) % 4])}, cl")
    add("shift", f"shl {rip(32)}, 3")
    add("shift", f"sar {rip(64)}, cl")
    add("shift", "shld eax, ecx, 7")
    add("shift", "shld r9, rdx, cl")
    add("shift", "shrd r12d, esi, cl")
    add("shift", "shrd dx, bx, 11")
    add("shift", f"shld {mem(64)}, rax, 13")
    add("shift", f"shrd {rip(32)}, ecx, 5")

    # ---- multiply ----------------------------------------------------------------------
    add("mul", "imul r13, rsi")
    add("mul", f"imul rcx, {mem(64)}")
    add("mul", "imul eax, ecx, 0x12")
    add("mul", "imul r8, r9, 0x12345678")
    add("mul", "imul di, si, -0x1234")
    add("mul", f"imul edx, {mem(32)}, 0x7f")
    add("mul", f"imul eax, {rip(32)}, 0x12345678")
    add("mul", f"imul r10, {rip(64)}, 7")
    for w in widths:
        add("mul", f"mul {src[w].next()}")
    add("mul", f"mul {mem(32)}")
    add("mul", f"imul {mem(64)}")

    # ---- mov ---------------------------------------------------------------------------
    for w in widths:
        add("mov", f"mov {dst[w].next()}, {src[w].next()}")
        add("mov", f"mov {dst[w].next()}, {mem(w)}")
        add("mov", f"mov {mem(w)}, {src[w].next()}")
        if w in (8, 32):
            add("mov", f"mov {mem(w)}, {imm_for[w]:#x}")
        if w != 8:
            add("mov", f"mov {dst[w].next()}, {imm_for[w]:#x}")
    add("mov", "movabs rax, 0x1122334455667788")
    add("mov", "movabs r9, -0x123456789abcdef")
    add("mov", "mov r12d, 0xdeadbeef")
    add("mov", "mov ah, ch")
    add("mov", "mov rbp, rsp")
    add("mov", f"mov rax, {rip(64)}")
    add("mov", f"mov {rip(64)}, r9")
    add("mov", f"mov r14d, {rip(32)}")
    add("mov", f"mov {rip(16)}, 0x1234")
    add("mov", f"mov {rip(8)}, 0x5a")
    add("mov", f"mov {rip(32)}, -0x789abcdf")

    # ---- movzx / movsx / movsxd ----------------------------------------------------------
    add("movx", "movzx eax, cl")
    add("movx", "movzx r11, sil")
    add("movx", "movzx dx, bh")
    add("movx", f"movzx r8d, {mem(8)}")
    add("movx", f"movzx rdi, {mem(16)}")
    add("movx", "movsx r9, bl")
    add("movx", "movsx rbp, si")
    add("movx", "movsxd rax, ecx")
    add("movx", "movsxd r15, esi")
    add("movx", f"movsxd rdx, {mem(32)}")
    add("movx", f"movzx eax, {rip(8)}")
    add("movx", f"movsx r10, {rip(16)}")
    add("movx", f"movsxd r13, {rip(32)}")

    # ---- lea ---------------------------------------------------------------------------
    add("lea", "lea rax, [rbx + 0x10]")
    add("lea", "lea r10, [rsi + 0x7ff]")
    add("lea", "lea ecx, [rbx + rsi]")
    add("lea", "lea rdx, [rax + 4*rcx + 0x12345678]")
    add("lea", "lea r12d, [r13 + 2*r14 - 8]")
    add("lea", "lea rdi, [8*rdi]")
    add("lea", "lea rax, [rip + DISP]")
    add("lea", "lea r11, [rip + DISP]")

    # ---- cmovcc / setcc ------------------------------------------------------------------
    for cc, name in enumerate(CC_NAMES):
        w = (16, 32, 64)[cc % 3]
        if cc % 5 == 4:
            add("cmov", f"cmov{name} {dst[w].next()}, {mem(w)}", cc=cc)
        else:
            add("cmov", f"cmov{name} {dst[w].next()}, {src[w].next()}", cc=cc)
    add("cmov", f"cmovne rax, {rip(64)}", cc=5)
    add("cmov", f"cmovl r9d, {rip(32)}", cc=12)
    for cc, name in enumerate(CC_NAMES):
        if cc % 6 == 5:
            add("setcc", f"set{name} {mem(8)}", cc=cc)
        else:
            add("setcc", f"set{name} {dst[8].next()}", cc=cc)
    add("setcc", f"setne {rip(8)}", cc=5)
    add("setcc", "setb ah", cc=2)

    # ---- bit operations --------------------------------------------------------------------
    for i, op in enumerate(("bt", "bts", "btr", "btc")):
        w = (16, 32, 64)[i % 3]
        if i % 2 == 0:
            add("bit", f"{op} {dst[w].next()}, {src[w].next()}")
        add("bit", f"{op} {dst[(32, 64, 16)[i % 3]].next()}, {(i * 13 + 5) % 16}")
        add("bit", f"{op} {mem((32, 64, 16)[(i + 1) % 3])}, {i * 3 + 1}")
    add("bit", f"bt {rip(32)}, 5")
    add("bit", f"btc {rip(64)}, 63")
    add("bit", "tzcnt eax, ecx")
    add("bit", f"tzcnt dx, {mem(16)}")
    add("bit", "lzcnt rdi, rsi")
    add("bit", "popcnt rcx, rdx")
    add("bit", f"popcnt eax, {rip(32)}")
    add("bit", "bswap eax")
    add("bit", "bswap r10")
    add("bit", "movbe eax, dword ptr [rbx + 0x44]")
    add("bit", "movbe qword ptr [rsi + 0x48], r11")
    add("bit", "crc32 r8, qword ptr [rbx + 0x50]")

    # ---- exchange ----------------------------------------------------------------------
    add("xchg", "xchg rax, rcx")
    add("xchg", "xchg r8, r9")
    add("xchg", "xchg edx, edi")
    add("xchg", "xchg eax, eax")
    add("xchg", "xchg cl, dh")
    add("xchg", f"xchg {mem(64)}, rdx")
    add("xchg", f"xchg {mem(8)}, r12b")
    add("xchg", f"xchg {rip(32)}, ecx")
    add("xchg", "cmpxchg ecx, edx")
    add("xchg", "cmpxchg r11, rbx")
    add("xchg", f"cmpxchg {mem(64)}, rcx")
    add("xchg", f"cmpxchg {mem(16)}, r9w")
    add("xchg", f"cmpxchg {rip(32)}, r10d")
    add("xchg", "xadd rax, rdx")
    add("xchg", f"xadd {mem(32)}, edi")
    add("xchg", f"xadd {rip(64)}, r8")
    add("xchg", "cmpxchg8b qword ptr [rsi + 0x60]")

    # ---- lock-prefixed read-modify-write ----------------------------------------------
    add("atomic", f"lock add {mem(32)}, eax")
    add("atomic", f"lock add {mem(64)}, 0x12345678")
    add("atomic", f"lock sub {mem(16)}, cx")
    add("atomic", f"lock and {mem(8)}, 0x3c")
    add("atomic", f"lock xor {mem(32)}, -2")
    add("atomic", f"lock inc {mem(64)}")
    add("atomic", f"lock not {mem(8)}")
    add("atomic", f"lock bts {mem(64)}, 17")
    add("atomic", f"lock xadd {mem(64)}, rax")
    add("atomic", f"lock cmpxchg {mem(32)}, edx")
    add("atomic", f"lock cmpxchg {mem(64)}, r15")
    add("atomic", "lock cmpxchg8b qword ptr [rbx + 0x68]")
    add("atomic", f"lock add {rip(32)}, 0x12345678")
    add("atomic", f"lock add {rip(16)}, 0x1234")
    add("atomic", f"lock xadd {rip(32)}, eax")
    add("atomic", f"lock cmpxchg {rip(64)}, r12")

    # ---- sign extension of the accumulator ------------------------------------------------
    for m in ("cbw", "cwde", "cdqe", "cwd", "cdq", "cqo"):
        add("convert", m)

    # ---- flags ---------------------------------------------------------------------------
    for m in ("clc", "stc", "lahf", "sahf"):
        add("flags", m)

    # ---- SSE / SSE2 (and a few SSSE3 / SSE4.1 forms) ---------------------------------
    def amem(width: int) -> str:
        return f"{PTR[width]} ptr [{base.next()} + {adisp.next():#x}]"

    sse = [
        f"movdqu xmm0, {mem(128)}",
        f"movdqu {mem(128)}, xmm1",
        f"movdqa xmm3, {amem(128)}",
        f"movdqa {amem(128)}, xmm12",
        "movq xmm0, rax",
        "movq rcx, xmm1",
        f"movq xmm2, {mem(64)}",
        f"movq {mem(64)}, xmm3",
        "movd xmm6, ecx",
        f"movd xmm8, {mem(32)}",
        "paddw xmm11, xmm2",
        f"paddd xmm3, {amem(128)}",
        "paddq xmm4, xmm13",
        "pxor xmm7, xmm7",
        f"pxor xmm14, {amem(128)}",
        "pand xmm0, xmm15",
        "pmuludq xmm11, xmm12",
        "psllq xmm13, 7",
        "psrld xmm14, 3",
        "pshufd xmm0, xmm1, 0x1b",
        f"pshufd xmm2, {amem(128)}, 0x4e",
        "pmovmskb eax, xmm6",
        "pinsrw xmm7, ecx, 3",
        f"movups xmm11, {mem(128)}",
        f"movss xmm13, {mem(32)}",
        f"movsd xmm15, {mem(64)}",
        f"movsd {mem(64)}, xmm0",
        "addps xmm3, xmm4",
        "mulsd xmm5, xmm6",
        "cvtsi2sd xmm11, rax",
        "pshufb xmm0, xmm1",
        "pmulld xmm2, xmm3",
        f"movnti {mem(32)}, eax",
        f"movss xmm1, {rip(32)}",
        f"movsd {rip(64)}, xmm2",
        f"movdqu xmm9, {rip(128)}",
        f"movdqu {rip(128)}, xmm15",
        f"paddd xmm0, {rip(128)}",
        f"pshufd xmm3, {rip(128)}, 0x1b",
        f"movq xmm4, {rip(64)}",
        f"movd xmm5, {rip(32)}",
        f"cvtsi2sd xmm6, {rip(64)}",
        f"movaps xmm10, {rip(128)}",
        f"pinsrw xmm1, {rip(16)}, 2",
    ]
    for line in sse:
        add("sse", line)

    # ---- VEX (AVX/AVX2 xmm, BMI1/BMI2) ------------------------------------------------
    vex = [
        f"vmovdqu xmm0, {mem(128)}",
        f"vmovdqu {mem(128)}, xmm9",
        "vmovdqu xmm1, xmm2",
        "vpaddd xmm3, xmm4, xmm5",
        f"vpaddd xmm10, xmm11, {mem(128)}",
        "vpxor xmm6, xmm7, xmm8",
        "vpshufb xmm0, xmm1, xmm2",
        "vmovd xmm3, eax",
        "vpbroadcastd xmm5, xmm6",
        "andn rax, rcx, rdx",
        "shlx eax, ecx, edx",
        f"sarx rdi, {mem(64)}, rcx",
        f"vmovdqu xmm0, {rip(128)}",
        f"vmovdqu {rip(128)}, xmm3",
        f"vpaddd xmm1, xmm2, {rip(128)}",
        f"vpxor xmm13, xmm14, {rip(128)}",
        f"andn eax, ecx, {rip(32)}",
    ]
    for line in vex:
        add("vex", line)

    # ---- nops and hints ---------------------------------------------------------------
    add("nop", "nop")
    add("nop", ".byte 0x66, 0x90  # nop")
    add("nop", ".byte 0x0f, 0x1f, 0x00  # nop")
    add("nop", ".byte 0x0f, 0x1f, 0x40, 0x00  # nop")
    add("nop", ".byte 0x0f, 0x1f, 0x44, 0x00, 0x00  # nop")
    add("nop", ".byte 0x66, 0x0f, 0x1f, 0x44, 0x00, 0x00  # nop")
    add("nop", ".byte 0x0f, 0x1f, 0x80, 0x00, 0x00, 0x00, 0x00  # nop")
    add("nop", ".byte 0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00  # nop")
    add("nop", ".byte 0x66, 0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00  # nop")
    add("nop", ".byte 0x66, 0x2e, 0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00  # nop")
    add("nop", "pause")
    add("nop", "endbr64")
    add("nop", "prefetcht0 byte ptr [rbx + 0x40]")
    add("nop", "prefetchnta byte ptr [rip + DISP]")

    # ---- balanced stack sequences ---------------------------------------------------------
    add("stack", "push rax", "pop rcx")
    add("stack", "push rbx", "pop rdx")
    add("stack", "push r12", "pop r13")
    add("stack", "push rsp", "pop rax")
    add("stack", "push 0x12", "pop rdi")
    add("stack", "push -0x12345678", "pop r8")
    add("stack", "push qword ptr [rbx + 0x18]", "pop rax")
    add("stack", "push rcx", "pop qword ptr [rsi + 0x28]")
    add("stack", "push ax", "pop cx")
    add("stack", "pushfq", "pop rax")
    add("stack", "pushfq", "popfq")
    add("stack", "push rbp", "mov rbp, rsp", "pop rbp")
    add("stack", "push rdx", "add rdx, 0x40", "pop rdx")

    # ---- branch templates ---------------------------------------------------------------
    for cc, name in enumerate(CC_NAMES):
        add("jcc_rel8", f"j{name} 1f\n1:", cc=cc)
    for cc, name in enumerate(CC_NAMES):
        add("jcc_rel32", f"j{name} ext_target", cc=cc)
    add("jmp_rel8", "jmp 1f\n1:")
    add("jmp_rel32", "jmp ext_target")
    add("call_rel32", "call ext_target")
    add("ret", "ret")
    for cls, op in (("call_reg", "call"), ("jmp_reg", "jmp")):
        for reg in (("rax", "r11") if op == "call" else ("rcx", "r10")):
            add(cls, f"{op} {reg}", target=reg)
    for m in ("loop", "loope", "loopne", "jrcxz"):
        add("loop_rel8", f"{m} 1f\n1:")
    return t


# ---------------------------------------------------------------------------------------
# Assembly and splitting
# ---------------------------------------------------------------------------------------


def expected_mnemonic(line: str) -> str:
    """Return the capstone mnemonic the template line should decode to."""
    if "#" in line:
        return line.split("#", 1)[1].strip()
    words = line.replace("{disp32}", "").split()
    if words[0] == "lock":
        return f"lock {words[1]}"
    return words[0]


def assemble(templates: list[Template], disp: int, workdir: Path) -> Assembled:
    """Assemble all templates with ``DISP`` replaced by ``disp`` and split per line."""
    src = io.StringIO()
    src.write(".intel_syntax noprefix\n.text\n")
    for ri, tpl in enumerate(templates):
        for li, line in enumerate(tpl.lines):
            body = line.split("#", 1)[0].replace("DISP", hex(disp))
            src.write(f"{label(ri, li)}:\n    {body}\n")
    src.write("p_end:\n")
    counts = [len(tpl.lines) for tpl in templates]
    return assemble_lines("x86_64-freestanding-none", src.getvalue(), counts, workdir)


# ---------------------------------------------------------------------------------------
# Static checks with capstone
# ---------------------------------------------------------------------------------------


def make_cs() -> capstone.Cs:
    """Return a detail-enabled x86_64 capstone disassembler."""
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    md.detail = True
    return md


def decode_one(md: capstone.Cs, code: bytes) -> Any:
    """Decode exactly one instruction covering all of ``code`` or raise."""
    insns = list(md.disasm(code, 0))
    if len(insns) != 1 or insns[0].size != len(code):
        raise ValueError(f"{code.hex()}: capstone decodes {[i.size for i in insns]}")
    return insns[0]


@dataclass
class Static:
    """Facts about a record derived from its encoding."""

    asm: str
    rip_rel: bool
    reads_mem: bool
    writes_mem: bool
    mem_size: int | None
    mem_align: int | None
    rel_offset: int | None = None
    rel_size: int | None = None
    cs_disp_size: int | None = None
    notes: list[str] = field(default_factory=list)


def is_vex(code: bytes) -> bool:
    """True if the first non-prefix byte is a VEX escape (c4/c5)."""
    i = 0
    while i < len(code) and code[i] in (0x66, 0xF2, 0xF3, 0xF0, 0x2E):
        i += 1
    return i < len(code) and code[i] in (0xC4, 0xC5)


def check_static(md: capstone.Cs, tpl: Template, parts: list[bytes]) -> Static:
    """Validate one record against the pool rules; return the derived facts."""
    texts: list[str] = []
    rip_rel = reads = writes = False
    sizes: list[int] = []
    align: int | None = None
    cs_disp_size: int | None = None
    branch = tpl.cls in BRANCH_CLASSES
    for line, code in zip(tpl.lines, parts, strict=True):
        insn = decode_one(md, code)
        want = expected_mnemonic(line)
        if insn.mnemonic != want:
            raise ValueError(f"{line!r}: capstone says {insn.mnemonic!r}")
        texts.append(f"{insn.mnemonic} {insn.op_str}".strip())
        if branch:
            continue
        _, regs_w = insn.regs_access()
        for r in regs_w:
            name = insn.reg_name(r)
            if name in FORBIDDEN_WRITE:
                stack_op = tpl.cls == "stack" and insn.mnemonic in STACK_MNEMONICS
                if stack_op and name in ("rsp", "esp", "sp"):
                    continue
                raise ValueError(f"{line!r} writes {name}")
        if insn.mnemonic in ("push", "pushfq"):
            writes = True
        if insn.mnemonic in ("pop", "popfq"):
            reads = True
        for op in insn.operands:
            if op.type != csx.X86_OP_MEM:
                continue
            m = op.mem
            base = insn.reg_name(m.base) if m.base else None
            if tpl.cls in ("lea", "nop") and base != "rip":
                continue
            if m.index != 0 or m.segment != 0:
                raise ValueError(f"{line!r}: index/segment register in memory operand")
            if base == "rip":
                if len(parts) != 1:
                    raise ValueError(f"{line!r}: rip-relative operand in a sequence")
                rip_rel = True
                cs_disp_size = int(insn.disp_size)
            elif base in ("rbx", "rsi"):
                if not 0 <= m.disp < MAX_DISP:
                    raise ValueError(f"{line!r}: displacement {m.disp:#x} out of range")
            else:
                raise ValueError(f"{line!r}: base register {base}")
            if tpl.cls in ("lea", "nop"):
                continue
            sizes.append(int(op.size))
            if op.access & capstone.CS_AC_READ:
                reads = True
            if op.access & capstone.CS_AC_WRITE:
                writes = True
            if (op.size == 16 and not is_vex(code) and insn.mnemonic not in UNALIGNED_OK
                    and insn.mnemonic.startswith(("p", "mov", "add", "sub", "mul", "and",
                                                  "or", "xor", "cvt", "sh", "unp"))):
                align = 16
    rel_offset = rel_size = None
    if branch and tpl.cls not in ("ret", "call_reg", "jmp_reg"):
        insn = decode_one(md, parts[0])
        rel_size = 1 if tpl.cls in ("jcc_rel8", "jmp_rel8", "loop_rel8") else 4
        rel_offset = len(parts[0]) - rel_size
        if int(insn.imm_offset) != rel_offset or int(insn.imm_size) != rel_size:
            raise ValueError(f"{tpl.lines[0]!r}: capstone rel field "
                             f"{insn.imm_offset}/{insn.imm_size}")
        if any(parts[0][rel_offset:]):
            raise ValueError(f"{tpl.lines[0]!r}: displacement not zero")
    return Static(
        asm="; ".join(texts),
        rip_rel=rip_rel,
        reads_mem=reads,
        writes_mem=writes,
        mem_size=max(sizes) if sizes else None,
        mem_align=align,
        rel_offset=rel_offset,
        rel_size=rel_size,
        cs_disp_size=cs_disp_size,
    )


def locate_disp(primary: bytes, probe: bytes) -> int:
    """Return the offset of the disp32 field from two encodings that differ only in it."""
    if len(primary) != len(probe):
        raise ValueError(f"{primary.hex()}: length changes with displacement")
    diff = [i for i, (a, b) in enumerate(zip(primary, probe, strict=True)) if a != b]
    if not diff or diff[-1] - diff[0] > 3:
        raise ValueError(f"{primary.hex()}: displacement bytes {diff}")
    off = diff[0]
    if (int.from_bytes(primary[off:off + 4], "little") != DISP_PRIMARY
            or int.from_bytes(probe[off:off + 4], "little") != DISP_PROBE):
        raise ValueError(f"{primary.hex()}: disp32 not at {off}")
    return off


# ---------------------------------------------------------------------------------------
# Execution in unicorn
# ---------------------------------------------------------------------------------------

UC_GPR = {name: getattr(ux, f"UC_X86_REG_{name.upper()}") for name in GPRS}
UC_XMM = [getattr(ux, f"UC_X86_REG_XMM{i}") for i in range(16)]


def patch_rip_disp(code: bytes, disp_offset: int, code_addr: int, target: int) -> bytes:
    """Rewrite the disp32 of a single RIP-relative instruction so it addresses ``target``."""
    disp = target - (code_addr + len(code))
    return code[:disp_offset] + disp.to_bytes(4, "little", signed=True) + code[disp_offset + 4:]


def new_env(rng: random.Random) -> tuple[Any, bytes]:
    """Create a unicorn instance in the snippet environment; return it and the data bytes."""
    uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
    uc.mem_map(CODE_BASE, CODE_SIZE, unicorn.UC_PROT_READ | unicorn.UC_PROT_EXEC)
    uc.mem_map(DATA_BASE, DATA_SIZE, unicorn.UC_PROT_READ | unicorn.UC_PROT_WRITE)
    uc.mem_map(STACK_BASE, STACK_SIZE, unicorn.UC_PROT_READ | unicorn.UC_PROT_WRITE)
    data = rng.randbytes(DATA_SIZE)
    uc.mem_write(DATA_BASE, data)
    uc.mem_write(STACK_BASE, rng.randbytes(STACK_SIZE))
    for name in RANDOM_GPRS:
        uc.reg_write(UC_GPR[name], rng.getrandbits(64))
    uc.reg_write(UC_GPR["rbx"], DATA_BASE)
    uc.reg_write(UC_GPR["rsi"], DATA_BASE)
    uc.reg_write(UC_GPR["rsp"], STACK_TOP)
    for reg in UC_XMM:
        uc.reg_write(reg, rng.getrandbits(128))
    uc.reg_write(ux.UC_X86_REG_MXCSR, MXCSR)
    uc.reg_write(ux.UC_X86_REG_RFLAGS, 0x2 | (rng.getrandbits(32) & ARITH_FLAGS))
    return uc, data


@dataclass
class RunResult:
    """What one execution observed."""

    error: str | None
    wrote: bool


def execute(tpl: Template, code: bytes, disp_offset: int | None, seed: int) -> RunResult:
    """Run one record once in the snippet environment and check the invariants."""
    rng = random.Random(seed)
    uc, _ = new_env(rng)
    if disp_offset is not None:
        code = patch_rip_disp(code, disp_offset, CODE_BASE, DATA_BASE + RIP_TARGET_OFFSET)
    uc.mem_write(CODE_BASE, code)
    end = CODE_BASE + len(code)
    accesses: list[tuple[int, int, int]] = []

    def hook(_uc: Any, access: int, address: int, size: int, _value: int,
             _user: object) -> None:
        accesses.append((access, address, size))

    uc.hook_add(unicorn.UC_HOOK_MEM_READ | unicorn.UC_HOOK_MEM_WRITE, hook)
    branch = tpl.cls in BRANCH_CLASSES
    if tpl.cls == "ret":
        uc.mem_write(STACK_TOP, end.to_bytes(8, "little"))
    if tpl.target_reg is not None:
        uc.reg_write(UC_GPR[tpl.target_reg], end)
    try:
        uc.emu_start(CODE_BASE, end, count=10)
    except unicorn.UcError as exc:
        return RunResult(f"unicorn: {exc}", False)
    if uc.reg_read(ux.UC_X86_REG_RIP) != end:
        return RunResult("did not reach the end of the record", False)
    if branch:
        return RunResult(None, False)
    for name, want in (("rbx", DATA_BASE), ("rsi", DATA_BASE), ("rsp", STACK_TOP)):
        if uc.reg_read(UC_GPR[name]) != want:
            return RunResult(f"{name} changed", False)
    wrote = False
    for access, address, size in accesses:
        in_data = address >= DATA_BASE and address + size <= DATA_BASE + DATA_SIZE
        in_stack = (tpl.cls == "stack" and address >= STACK_TOP - STACK_SCRATCH
                    and address + size <= STACK_TOP)
        if not (in_data or in_stack):
            return RunResult(f"access outside the buffers at {address:#x}", False)
        wrote |= access == unicorn.UC_MEM_WRITE
    return RunResult(None, wrote)


# ---------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------


def tool_versions() -> dict[str, str]:
    """Return the versions of the tools that produced the pool."""
    zig = subprocess.run([sys.executable, "-m", "ziglang", "version"], check=True,
                         capture_output=True, text=True).stdout.strip()
    major, minor, _ = capstone.cs_version()
    return {
        "ziglang": zig,
        "capstone": importlib.metadata.version("capstone"),
        "capstone_core": f"{major}.{minor}",
        "unicorn": importlib.metadata.version("unicorn"),
        "unicorn_core": ".".join(str(x) for x in unicorn.uc_version()[:2]),
        "pyelftools": importlib.metadata.version("pyelftools"),
    }


def environment_doc() -> dict[str, Any]:
    """Describe the snippet environment for the manifest."""
    return {
        "syntax": "Intel (.intel_syntax noprefix), LLVM integrated assembler via ziglang",
        "cpu_model": "unicorn default x86_64 CPU model (UC_CPU_X86_HASWELL in unicorn 2.1)",
        "code_base": CODE_BASE,
        "data_base": DATA_BASE,
        "data_size": DATA_SIZE,
        "stack_base": STACK_BASE,
        "stack_size": STACK_SIZE,
        "rsp": STACK_TOP,
        "min_stack_free_below_rsp": STACK_SCRATCH,
        "rbx": "data_base (start of the 4096-byte read-write data buffer)",
        "rsi": "data_base (start of the 4096-byte read-write data buffer)",
        "other_gprs": "random 64-bit values",
        "xmm0_15": "random 128-bit values; compare xmm only (unicorn VEX keeps ymm[255:128])",
        "rflags": "0x2 | random CF PF AF ZF SF OF; DF, TF, AC clear",
        "mxcsr": MXCSR,
        "never_written": ["rbx", "rsi", "rsp", "rip"],
        "stack_records": "balanced push/pop sequences (2-3 insns), net rsp change 0, "
                         "touch only [rsp-512, rsp)",
        "memory_operands": "[rbx + disp] or [rsi + disp] with 0 <= disp < 0x800, "
                           "or [rip + disp32]; no index registers",
        "rip_relative": "rewrite the disp32 at disp_offset so record_end + disp32 lands in the "
                        "data buffer (aligned to mem_align if set); the generator and test use "
                        f"data_base + {RIP_TARGET_OFFSET:#x}",
        "branch_displacements": "rel field at rel_offset/rel_size is zero in the pool; "
                                "target = record_end + displacement",
        "excluded": ["div/idiv", "int/int3/ud2/hlt/cli/sti/in/out/syscall", "cpuid",
                     "rdtsc/rdrand", "string instructions", "x87", "bsf/bsr",
                     "bt* mem, reg (register bit offset)", "popf of random values"],
    }


def generate(out_dir: Path) -> dict[str, Any]:
    """Build, check, execute and write the pool; return the manifest."""
    templates = build_templates()
    md = make_cs()
    with tempfile.TemporaryDirectory() as tmp:
        prim = assemble(templates, DISP_PRIMARY, Path(tmp))
        probe = assemble(templates, DISP_PROBE, Path(tmp))

    # capstone must split the whole section at the same boundaries
    label_starts = [s for st in prim.starts for s in st]
    cs_starts = [i.address for i in md.disasm(prim.text, 0)]
    if cs_starts != label_starts:
        raise SystemExit("capstone and label split disagree")

    rel32_fields: list[int] = []
    records: list[dict[str, Any]] = []
    dropped: list[dict[str, str]] = []
    quirks: list[str] = []
    for ri, tpl in enumerate(templates):
        parts = prim.parts[ri]
        st = check_static(md, tpl, parts)
        disp_offset = None
        if st.rip_rel:
            disp_offset = locate_disp(parts[0], probe.parts[ri][0])
            insn = decode_one(md, parts[0])
            if int(insn.disp_offset) != disp_offset:
                raise SystemExit(f"{tpl.lines[0]}: capstone disp_offset {insn.disp_offset}")
        code = b"".join(parts)
        wrote = False
        error = None
        for run in range(3):
            res = execute(tpl, code, disp_offset, seed=ri * 7919 + run)
            if res.error is not None:
                error = res.error
                break
            wrote |= res.wrote
        if error is not None:
            dropped.append({"asm": "; ".join(tpl.lines), "hex": code.hex(), "reason": error})
            continue
        if tpl.cls in REL32_CLASSES:
            assert st.rel_offset is not None
            rel32_fields.append(prim.starts[ri][0] + st.rel_offset)
        if st.rip_rel and st.cs_disp_size != 4:
            quirks.append(code.hex())
        rec: dict[str, Any] = {
            "hex": code.hex(),
            "asm": st.asm,
            "len": len(code),
            "class": tpl.cls,
            "insns": len(parts),
            "rip_rel": st.rip_rel,
            "disp_offset": disp_offset,
            "mem_size": st.mem_size,
            "writes_mem": st.writes_mem or wrote,
            "rel_offset": st.rel_offset,
            "rel_size": st.rel_size,
            "parts": [p.hex() for p in parts],
            "reads_mem": st.reads_mem,
            "mem_align": st.mem_align,
            "cc": tpl.cc,
            "target_reg": tpl.target_reg,
        }
        records.append(rec)
    all_rel32 = sorted(prim.starts[ri][0] + len(prim.parts[ri][0]) - 4
                       for ri, tpl in enumerate(templates) if tpl.cls in REL32_CLASSES)
    if prim.relocs != all_rel32 or not set(rel32_fields) <= set(prim.relocs):
        raise SystemExit("relocations do not match the rel32 branch fields")

    out_dir.mkdir(parents=True, exist_ok=True)
    body = "".join(json.dumps(r) + "\n" for r in records).encode()
    (out_dir / "pool.jsonl").write_bytes(body)
    counts = Counter(r["class"] for r in records)
    manifest: dict[str, Any] = {
        "generator": "tools/gen_x86_pool.py",
        "command": COMMAND,
        "assemble_command": ASSEMBLE_COMMAND,
        "versions": tool_versions(),
        "environment": environment_doc(),
        "record_count": len(records),
        "class_counts": dict(sorted(counts.items())),
        "branch_classes": list(BRANCH_CLASSES),
        "pool_sha256": hashlib.sha256(body).hexdigest(),
        "dropped": dropped,
        "capstone_disp_size_quirks": quirks,
        "capstone_disp_size_quirks_note": (
            "capstone 5 reports disp_size 2 for these RIP-relative encodings (0x66 prefix or "
            "VEX pp=01); their disp32 position was verified by assembling twice with "
            "different displacements and diffing the bytes"
        ),
        "straight_line_count": sum(1 for r in records if r["class"] not in BRANCH_CLASSES),
        "branch_count": sum(1 for r in records if r["class"] in BRANCH_CLASSES),
        "record_fields": {
            "hex": "whole record encoding",
            "asm": "capstone rendering (Intel), '; '-joined for sequences",
            "len": "total length in bytes",
            "class": "instruction family; branch classes listed in branch_classes",
            "insns": "number of instructions (1-3)",
            "rip_rel": "single instruction with a [rip + disp32] operand",
            "disp_offset": "offset of the disp32 inside the instruction (rip_rel only)",
            "mem_size": "widest explicit memory operand in bytes, null if none",
            "writes_mem": "may store to memory (data buffer, or the stack for push)",
            "rel_offset": "offset of the branch displacement field",
            "rel_size": "size of the branch displacement field (1 or 4)",
            "parts": "per-instruction encodings",
            "reads_mem": "may load from memory",
            "mem_align": "required alignment of the memory operand, null if none",
            "cc": "condition code 0-15 for jcc/setcc/cmovcc",
            "target_reg": "register holding the target for call_reg/jmp_reg",
        },
    }
    (out_dir / "pool.manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="output directory")
    args = parser.parse_args(argv)
    manifest = generate(args.out)
    print(f"{manifest['record_count']} records")
    for cls, n in manifest["class_counts"].items():
        print(f"  {cls:12s} {n}")
    for d in manifest["dropped"]:
        print(f"dropped: {d['asm']}: {d['reason']}")
    if manifest["capstone_disp_size_quirks"]:
        print(f"capstone disp_size quirks: {len(manifest['capstone_disp_size_quirks'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
