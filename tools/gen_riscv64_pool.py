#!/usr/bin/env python3
"""Generate the committed pool of riscv64 instruction encodings for snippet property tests.

Output: ``tests/vectors/riscv64/pool.jsonl`` (one record per line) and
``tests/vectors/riscv64/pool.manifest.json``.  Regenerate from the repository root with::

    python tools/gen_riscv64_pool.py

Templates are assembled with the LLVM integrated assembler shipped in the ``ziglang`` wheel;
its default riscv64 CPU (``generic-rv64``) is RV64GC (I, M, A, F, D, C, Zicsr)::

    python -m ziglang cc -target riscv64-freestanding-none -c pool.S -o pool.o

Each line is preceded by ``.option rvc`` when its mnemonic starts with ``c.`` and by
``.option norvc`` otherwise, so the assembler never compresses a standard template behind
our back; ``.option norelax`` keeps linker relaxation (and its relocations) out.  Every
instruction gets its own label and is cut out of ``.text`` with the symbol table
(pyelftools); the split is cross-checked with capstone (``CS_MODE_RISCV64 |
CS_MODE_RISCVC``: same boundaries, 2 or 4 bytes as the template says, the mnemonic the
template names).  Each part is given to the kprobe_ref decoder
(``ARCHES["riscv64"].decode``): a rejection is an error (LR/SC are not templated; AMOs are
single instructions and stepped), and the verdict and decoder class of each part are
stored.  Each record then runs three times in unicorn (RV64, mstatus.FS = Dirty so F/D
work) in the snippet environment; records unicorn refuses are dropped and listed.

Snippet environment (the contract between this pool and the tests that use it):

* Code is mapped at ``CODE_BASE``; the 4096-byte read-write data buffer (random bytes) at
  ``DATA_BASE`` = ``CODE_BASE + 512 KiB``.
* Base registers: ``s2`` (x18) = ``DATA_BASE`` and ``s3`` (x19) = ``DATA_BASE + 0x800`` for
  standard loads/stores/AMOs (signed 12-bit offsets from the middle cover the buffer);
  ``s0`` (x8) = ``DATA_BASE`` and ``s1`` (x9) = ``DATA_BASE + 0x800`` for compressed
  loads/stores, whose base must be one of x8-x15 and whose offsets are unsigned.
* ``sp`` holds ``STACK_TOP`` (16-byte aligned), 4096 bytes mapped below and above it; only
  ``stack`` records use it: balanced sequences that restore sp and touch only the 512
  bytes below it.
* Every other integer register and f0-f31 hold random values; fcsr is 0 (round to nearest
  even, no flags).
* Records never write s0, s1, s2, s3, sp or the PC (except branch templates).  Memory
  operands are base + immediate in the buffer.  No LR/SC (rejected), no CSR access
  (rejected), no ecall/ebreak/fence.i; division by zero does not trap on RISC-V, so
  DIV/REM are included.  No Zb* bit-manipulation: unicorn 2.1's RV64 CPU raises an
  exception on it (checked with ``sh1add``), and the default assembler target lacks it.
* ``pcrel`` records (AUIPC, simulated) keep their assembled immediate: both runs must agree
  on the result register.  ``pcrel_load`` records are ``auipc rX, 0; <load/store> 0(rX)``
  pairs: ``rel_kind`` ``hi20_lo12i`` (I-type low part) or ``hi20_lo12s`` (S-type), the AUIPC
  at ``rel_part`` and the low 12 bits in part ``rel_part + 1``; users set both so that
  ``address(rel_from) + offset`` lands in the buffer (the generator and the tests use
  ``DATA_BASE + 0x400``).

Branch templates (classes ending in ``_branch``) carry a zero offset: ``rel_kind`` is ``b``
(BEQ...BGEU, +-4 KiB), ``j`` (JAL, +-1 MiB), ``cj`` (C.J, +-2 KiB), ``cb`` (C.BEQZ/C.BNEZ,
+-256 B: handle the range like x86 rel8) or ``hi20_lo12i`` (``auipc t0, 0; jalr rd, 0(t0)``
and ``auipc t0, 0; addi t0, t0, 0; c.jr t0`` / ``c.jalr t0``); target =
``address(rel_from) + offset``, always even.  JAL/JALR/C.JALR with a link register write
``ra`` or ``t0`` (random registers, never bases).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import io
import json
import random
import re
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import capstone
import unicorn as _unicorn
import unicorn.riscv_const as ur
from poolkit import Assembled, assemble_lines, label

from kprobe_ref.arch import ARCHES, Verdict

# unicorn's bindings are only partially annotated; treat the module as dynamically typed.
unicorn: Any = _unicorn

REPO = Path(__file__).resolve().parent.parent
OUT_DIR = REPO / "tests" / "vectors" / "riscv64"
COMMAND = "python tools/gen_riscv64_pool.py"
ASSEMBLE_COMMAND = "python -m ziglang cc -target riscv64-freestanding-none -c pool.S -o pool.o"

CODE_BASE = 0x0100_0000
CODE_SIZE = 0x1_0000
DATA_BASE = 0x0108_0000
DATA_SIZE = 0x1000
STACK_BASE = 0x0120_0000
STACK_SIZE = 0x2000
STACK_TOP = STACK_BASE + 0x1000
STACK_SCRATCH = 512
LIT_TARGET_OFFSET = 0x400
MSTATUS_FS = 0b11 << 13

ABI = ("zero", "ra", "sp", "gp", "tp", "t0", "t1", "t2", "s0", "s1", "a0", "a1", "a2", "a3",
       "a4", "a5", "a6", "a7", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11",
       "t3", "t4", "t5", "t6")  # fmt: skip
BASES = {"s0": DATA_BASE, "s1": DATA_BASE + 0x800, "s2": DATA_BASE, "s3": DATA_BASE + 0x800}
FORBIDDEN = frozenset({*BASES, "sp"})
RANDOM_GPRS = tuple(n for n in ABI[1:] if n not in FORBIDDEN)
DEST = [n for n in RANDOM_GPRS if n not in ("ra",)]
CDEST = ["a0", "a1", "a2", "a3", "a4", "a5"]
"""Compressed-register destinations (x10-x15; s0/s1 are bases)."""

BRANCH_CLASSES = ("bcc_branch", "jal_branch", "cj_branch", "cb_branch", "jalr_branch",
                  "cjr_branch")
REL_KINDS = ("b", "j", "cj", "cb", "hi20_lo12i", "hi20_lo12s")


@dataclass(frozen=True)
class Template:
    """One pool record before assembly: a class and 1-4 instruction lines.

    A line may end in ``# mnemonic`` to name the capstone mnemonic when it differs from the
    first word of the line (aliases).
    """

    cls: str
    lines: tuple[str, ...]
    rel_kind: str | None = None
    rel_part: int | None = None
    rel_from: int | None = None


class Cycle:
    """Deterministic round-robin picker."""

    def __init__(self, items: list[Any] | tuple[Any, ...], step: int = 1):
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

    def add(cls: str, *lines: str, rel: str | None = None, part: int | None = None,
            frm: int | None = None) -> None:
        t.append(Template(cls, tuple(lines), rel, part, frm))

    rd = Cycle(DEST, 5)
    rs = Cycle([*RANDOM_GPRS, "zero", "s0", "s1", "s2", "s3", "sp"], 7)
    fr = Cycle([f"f{i}" for i in range(32)], 5)
    base = Cycle(("s2", "s3"))

    def r() -> str:
        return str(rd.next())

    def s() -> str:
        return str(rs.next())

    def f() -> str:
        return str(fr.next())

    # ---- integer register-register / immediate ---------------------------------------------
    for op in ("add", "sub", "and", "or", "xor", "sll", "srl", "sra", "slt", "sltu",
               "addw", "subw", "sllw", "srlw", "sraw"):
        add("alu", f"{op} {r()}, {s()}, {s()}")
    for i, op in enumerate(("addi", "andi", "ori", "xori", "slti", "sltiu", "addiw")):
        add("alu", f"{op} {r()}, {s()}, {(-1) ** i * (0x123 + 0x155 * i) % 2048}")
        add("alu", f"{op} {r()}, {s()}, -{1 + 97 * i}")
    for i, op in enumerate(("slli", "srli", "srai")):
        add("alu", f"{op} {r()}, {s()}, {(13 * i + 7) % 64}")
        add("alu", f"{op}w {r()}, {s()}, {(11 * i + 3) % 32}")
    add("alu", "lui a0, 0x12345")
    add("alu", "lui t6, 0xfffff")
    add("alu", "addi a1, s2, 0x10  # addi")
    add("alu", "addi t0, sp, -16  # addi")
    add("alu", "sub a2, zero, a3  # neg")
    add("alu", "xori a4, a5, -1  # not")
    add("alu", "sltiu a6, a7, 1  # seqz")
    add("alu", "sltu t1, zero, t2  # snez")
    add("alu", "addiw s4, s5, 0  # sext.w")
    add("alu", "addi s6, s7, 0  # mv")
    add("alu", "addi zero, zero, 0  # nop")
    # ---- M extension ---------------------------------------------------------------------
    for op in ("mul", "mulh", "mulhsu", "mulhu", "mulw", "div", "divu", "rem", "remu",
               "divw", "divuw", "remw", "remuw"):
        add("mul", f"{op} {r()}, {s()}, {s()}")
    add("mul", "div a0, a1, zero")
    add("mul", "remuw a2, a3, zero")
    # ---- loads and stores -----------------------------------------------------------------
    for i, (op, size) in enumerate((("lb", 1), ("lh", 2), ("lw", 4), ("ld", 8), ("lbu", 1),
                                    ("lhu", 2), ("lwu", 4))):
        add("mem", f"{op} {r()}, {size * (5 + 23 * i) % 0x7F8}({base.next()})")
        add("mem", f"{op} {r()}, -{size * (1 + 41 * i) % 0x7F8 + size}(s3)")
    for i, (op, size) in enumerate((("sb", 1), ("sh", 2), ("sw", 4), ("sd", 8))):
        add("mem", f"{op} {s()}, {size * (7 + 29 * i) % 0x7F8}({base.next()})")
        add("mem", f"{op} {s()}, -{size * (3 + 37 * i) % 0x7F8 + size}(s3)")
    add("mem", "ld a0, 2040(s3)")
    add("mem", "sd zero, -2048(s3)")
    add("mem", "lbu t3, 0(s2)")
    add("mem", "sw s2, 12(s2)")
    add("mem", "fence rw, rw  # fence")
    add("mem", "fence.tso")
    # ---- A extension (AMOs are single instructions: stepped) --------------------------------
    for i, op in enumerate(("amoswap", "amoadd", "amoand", "amoor", "amoxor", "amomax",
                            "amomin", "amomaxu", "amominu")):
        width = ("w", "d")[i % 2]
        order = ("", ".aq", ".rl", ".aqrl")[i % 4]
        add("atomic", f"{op}.{width}{order} {r()}, {s()}, ({base.next()})")
    add("atomic", "amoadd.d zero, a0, (s3)")
    # ---- F and D extensions -----------------------------------------------------------------
    for line in (
        f"fmv.w.x {f()}, a0", f"fmv.x.w a1, {f()}", f"fmv.d.x {f()}, t0",
        f"fmv.x.d t1, {f()}", f"fadd.s {f()}, {f()}, {f()}", f"fadd.d {f()}, {f()}, {f()}",
        f"fsub.d {f()}, {f()}, {f()}", f"fmul.s {f()}, {f()}, {f()}",
        f"fdiv.d {f()}, {f()}, {f()}", f"fsqrt.s {f()}, {f()}", f"fsqrt.d {f()}, {f()}",
        f"fmadd.d {f()}, {f()}, {f()}, {f()}", f"fmsub.s {f()}, {f()}, {f()}, {f()}",
        f"fnmadd.d {f()}, {f()}, {f()}, {f()}", f"fnmsub.s {f()}, {f()}, {f()}, {f()}",
        f"fsgnj.d {f()}, {f()}, {f()}", f"fsgnjn.s {f()}, {f()}, {f()}",
        f"fsgnjx.d {f()}, {f()}, {f()}", f"fmin.d {f()}, {f()}, {f()}",
        f"fmax.s {f()}, {f()}, {f()}", f"fcvt.d.s {f()}, {f()}", f"fcvt.s.d {f()}, {f()}",
        f"fcvt.w.d a2, {f()}, rtz", f"fcvt.l.s a3, {f()}", f"fcvt.wu.s a4, {f()}, rtz",
        f"fcvt.d.l {f()}, a5", f"fcvt.s.w {f()}, a6", f"fcvt.d.wu {f()}, a7",
        f"feq.d t2, {f()}, {f()}", f"flt.s t3, {f()}, {f()}", f"fle.d t4, {f()}, {f()}",
        f"fclass.d t5, {f()}", f"fclass.s t6, {f()}",
    ):
        add("fp", line)
    add("fp_mem", f"flw {f()}, 0x44(s2)")
    add("fp_mem", f"fld {f()}, -0x88(s3)")
    add("fp_mem", f"fsw {f()}, 0x7fc(s3)")
    add("fp_mem", f"fsd {f()}, 0x120(s2)")
    add("fp_mem", f"fld {f()}, 0x7f8(s3)")
    add("fp_mem", f"fsd {f()}, -0x800(s3)")
    # ---- compressed ----------------------------------------------------------------------------
    cd = Cycle(CDEST, 1)
    full = Cycle([n for n in DEST if n != "zero"], 3)
    for line in (
        f"c.addi {full.next()}, 13", f"c.addi {full.next()}, -7",
        f"c.li {full.next()}, -32", f"c.li {full.next()}, 31",
        f"c.lui {full.next()}, 0x1f", f"c.lui {full.next()}, 0xfffe0",
        f"c.addiw {full.next()}, -1", f"c.addiw {full.next()}, 5",
        f"c.slli {full.next()}, 63", f"c.srli {cd.next()}, 1", f"c.srai {cd.next()}, 33",
        f"c.andi {cd.next()}, -9", f"c.mv {full.next()}, {full.next()}",
        "c.mv a0, s2", f"c.add {full.next()}, {full.next()}",
        f"c.sub {cd.next()}, {cd.next()}", f"c.xor {cd.next()}, {cd.next()}",
        f"c.or {cd.next()}, {cd.next()}", f"c.and {cd.next()}, {cd.next()}",
        f"c.subw {cd.next()}, {cd.next()}", f"c.addw {cd.next()}, {cd.next()}",
        "c.nop", "c.addi4spn a0, sp, 16", "c.addi4spn a5, sp, 1020",
    ):
        add("compressed", line)
    for line in (
        f"c.lw {cd.next()}, 0(s0)", f"c.lw {cd.next()}, 124(s1)", f"c.ld {cd.next()}, 8(s0)",
        f"c.ld {cd.next()}, 248(s1)", f"c.sw {cd.next()}, 4(s1)", "c.sw s0, 60(s0)",
        f"c.sd {cd.next()}, 16(s0)", f"c.sd {cd.next()}, 240(s1)",
        "c.fld fs0, 24(s1)", "c.fsd fa5, 200(s0)",
    ):
        add("compressed_mem", line)
    # ---- balanced stack sequences --------------------------------------------------------------
    add("stack", "addi sp, sp, -32", "sd a0, 8(sp)", "ld a1, 8(sp)", "addi sp, sp, 32")
    add("stack", "addi sp, sp, -16", "sw t0, 0(sp)", "lh t1, 2(sp)", "addi sp, sp, 16")
    add("stack", "c.addi16sp sp, -64", "c.sdsp ra, 56(sp)", "c.ldsp a2, 56(sp)",
        "c.addi16sp sp, 64")
    add("stack", "c.addi16sp sp, -16", "c.swsp a3, 4(sp)", "c.lwsp a4, 4(sp)",
        "c.addi sp, 16")
    add("stack", "sd a5, -8(sp)", "ld a6, -8(sp)")
    add("stack", "c.addi sp, -16", "c.fsdsp f8, 8(sp)", "c.fldsp f9, 8(sp)",
        "c.addi16sp sp, 16")
    add("stack", "mv t0, sp  # mv", "addi sp, sp, -496", "mv sp, t0  # mv")
    # ---- PC-relative (simulated) ----------------------------------------------------------------
    add("pcrel", "auipc a0, 0x12345")
    add("pcrel", "auipc t0, 0")
    add("pcrel", "auipc ra, 0xfffff")
    add("pcrel", "auipc s11, 0x80000")
    add("pcrel_load", "auipc a5, 0", "ld a0, 0(a5)", rel="hi20_lo12i", part=0, frm=0)
    add("pcrel_load", "auipc t1, 0", "lw t2, 0(t1)", rel="hi20_lo12i", part=0, frm=0)
    add("pcrel_load", "auipc a4, 0", "sd a1, 0(a4)", rel="hi20_lo12s", part=0, frm=0)
    add("pcrel_load", "auipc t3, 0", "fld f7, 0(t3)", rel="hi20_lo12i", part=0, frm=0)
    add("pcrel_load", "auipc a3, 0", "addi a3, a3, 0", rel="hi20_lo12i", part=0, frm=0)
    # ---- branch templates ---------------------------------------------------------------------
    pairs = [("a0", "a1"), ("t0", "zero"), ("s2", "s3"), ("a7", "t6"), ("zero", "s4"),
             ("ra", "gp")]
    for i, op in enumerate(("beq", "bne", "blt", "bge", "bltu", "bgeu")):
        for k in range(2):
            x, y = pairs[(i + 3 * k) % len(pairs)]
            add("bcc_branch", f"{op} {x}, {y}, 0", rel="b", part=0, frm=0)
    add("jal_branch", "jal zero, 0  # j", rel="j", part=0, frm=0)
    add("jal_branch", "jal ra, 0  # jal", rel="j", part=0, frm=0)
    add("jal_branch", "jal t0, 0  # jal", rel="j", part=0, frm=0)
    add("cj_branch", "c.j 0", rel="cj", part=0, frm=0)
    for op in ("c.beqz", "c.bnez"):
        for reg in ("a0", "a5", "s0"):
            add("cb_branch", f"{op} {reg}, 0", rel="cb", part=0, frm=0)
    add("jalr_branch", "auipc t0, 0", "jalr zero, 0(t0)  # jr", rel="hi20_lo12i", part=0,
        frm=0)
    add("jalr_branch", "auipc t1, 0", "jalr ra, 0(t1)  # jalr", rel="hi20_lo12i", part=0,
        frm=0)
    add("jalr_branch", "auipc a2, 0", "jalr a3, 0(a2)  # jalr", rel="hi20_lo12i", part=0,
        frm=0)
    add("jalr_branch", "auipc ra, 0", "jalr ra, 0(ra)  # jalr", rel="hi20_lo12i", part=0,
        frm=0)
    add("cjr_branch", "auipc ra, 0", "addi ra, ra, 0", "c.jalr ra", rel="hi20_lo12i", part=0,
        frm=0)
    add("cjr_branch", "auipc t0, 0", "addi t0, t0, 0", "c.jr t0", rel="hi20_lo12i", part=0,
        frm=0)
    add("cjr_branch", "auipc a0, 0", "addi a0, a0, 0", "c.jalr a0", rel="hi20_lo12i", part=0,
        frm=0)
    return t


# ---------------------------------------------------------------------------------------
# Offset fields
# ---------------------------------------------------------------------------------------


def _bits(value: int, hi: int, lo: int) -> int:
    return (value >> lo) & ((1 << (hi - lo + 1)) - 1)


def split_hi_lo(offset: int) -> tuple[int, int]:
    """Split a 32-bit PC-relative offset into AUIPC's hi20 and a signed lo12."""
    hi = (offset + 0x800) >> 12
    return hi, offset - (hi << 12)


def patch_rel(parts: list[bytes], kind: str, part: int, offset: int) -> list[bytes]:
    """Return ``parts`` with the PC-relative field of kind ``kind`` (in part ``part``, and
    ``part + 1`` for the hi20/lo12 kinds) set to ``offset``."""
    out = list(parts)
    w = int.from_bytes(out[part], "little")
    if offset % 2:
        raise ValueError("odd offset")
    if kind == "b":
        if not -4096 <= offset < 4096:
            raise ValueError("b: out of range")
        w &= ~0xFE000F80
        w |= (_bits(offset, 12, 12) << 31 | _bits(offset, 10, 5) << 25
              | _bits(offset, 4, 1) << 8 | _bits(offset, 11, 11) << 7)
    elif kind == "j":
        if not -(1 << 20) <= offset < 1 << 20:
            raise ValueError("j: out of range")
        w &= 0xFFF
        w |= (_bits(offset, 20, 20) << 31 | _bits(offset, 10, 1) << 21
              | _bits(offset, 11, 11) << 20 | _bits(offset, 19, 12) << 12)
    elif kind == "cj":
        if not -2048 <= offset < 2048:
            raise ValueError("cj: out of range")
        w &= ~0x1FFC
        w |= (_bits(offset, 11, 11) << 12 | _bits(offset, 4, 4) << 11
              | _bits(offset, 9, 8) << 9 | _bits(offset, 10, 10) << 8
              | _bits(offset, 6, 6) << 7 | _bits(offset, 7, 7) << 6
              | _bits(offset, 3, 1) << 3 | _bits(offset, 5, 5) << 2)
    elif kind == "cb":
        if not -256 <= offset < 256:
            raise ValueError("cb: out of range")
        w &= ~0x1C7C
        w |= (_bits(offset, 8, 8) << 12 | _bits(offset, 4, 3) << 10
              | _bits(offset, 7, 6) << 5 | _bits(offset, 2, 1) << 3 | _bits(offset, 5, 5) << 2)
    elif kind in ("hi20_lo12i", "hi20_lo12s"):
        if not -(1 << 31) <= offset < (1 << 31) - 0x800:
            raise ValueError("hi20/lo12: out of range")
        hi, lo = split_hi_lo(offset)
        w = (w & 0xFFF) | ((hi & 0xFFFFF) << 12)
        lw = int.from_bytes(out[part + 1], "little")
        if kind == "hi20_lo12i":
            lw = (lw & 0xFFFFF) | ((lo & 0xFFF) << 20)
        else:
            lw = (lw & 0x01FFF07F) | (_bits(lo, 11, 5) << 25) | (_bits(lo, 4, 0) << 7)
        out[part + 1] = lw.to_bytes(4, "little")
    else:
        raise ValueError(f"unknown rel kind {kind}")
    out[part] = w.to_bytes(len(out[part]), "little")
    return out


# ---------------------------------------------------------------------------------------
# Assembly and splitting
# ---------------------------------------------------------------------------------------


ALIASES = {
    "subw": ("negw",), "sub": ("neg",), "addi": ("mv", "nop"), "addiw": ("sext.w",),
    "bne": ("bnez",), "beq": ("beqz",), "blt": ("bltz", "bgtz"), "bge": ("bgez", "blez"),
    "sltu": ("snez",), "sltiu": ("seqz",), "xori": ("not",),
}
"""Capstone's alias renderings that depend on the operands a template happened to get."""


def expected_mnemonic(line: str) -> str:
    """Return the capstone mnemonic the template line should decode to."""
    if "#" in line:
        return line.split("#", 1)[1].strip()
    return line.split()[0]


def assemble(templates: list[Template], workdir: Path) -> Assembled:
    """Assemble all templates and split them per line."""
    src = io.StringIO()
    src.write(".option norelax\n.text\n")
    for ri, tpl in enumerate(templates):
        for li, line in enumerate(tpl.lines):
            body = line.split("#", 1)[0].strip()
            rvc = "rvc" if body.startswith("c.") else "norvc"
            src.write(f".option {rvc}\n{label(ri, li)}:\n    {body}\n")
    src.write("p_end:\n")
    counts = [len(tpl.lines) for tpl in templates]
    return assemble_lines("riscv64-freestanding-none", src.getvalue(), counts, workdir)


# ---------------------------------------------------------------------------------------
# Static checks
# ---------------------------------------------------------------------------------------


def make_cs() -> capstone.Cs:
    """Return a detail-enabled RV64GC capstone disassembler."""
    md = capstone.Cs(capstone.CS_ARCH_RISCV, capstone.CS_MODE_RISCV64 | capstone.CS_MODE_RISCVC)
    md.detail = True
    return md


def decode_one(md: capstone.Cs, code: bytes, addr: int = 0) -> Any:
    """Decode exactly one instruction covering all of ``code`` or raise."""
    insns = list(md.disasm(code, addr))
    if len(insns) != 1 or insns[0].size != len(code):
        raise ValueError(f"{code.hex()}: capstone decodes {[i.size for i in insns]}")
    return insns[0]


NO_DEST = ("s", "fs", "c.s", "c.fs", "b", "c.b", "c.j", "j", "fence", "c.nop", "nop")


def check_static(md: capstone.Cs, tpl: Template, parts: list[bytes]) -> str:
    """Validate one record against the pool rules; return its capstone rendering."""
    texts: list[str] = []
    branch = tpl.cls in BRANCH_CLASSES
    for line, code in zip(tpl.lines, parts, strict=True):
        body = line.split("#", 1)[0].strip()
        want_len = 2 if body.startswith("c.") else 4
        if len(code) != want_len:
            raise ValueError(f"{line!r}: {len(code)} bytes, expected {want_len}")
        insn = decode_one(md, code)
        want = expected_mnemonic(line)
        if insn.mnemonic != want and insn.mnemonic not in ALIASES.get(want, ()):
            raise ValueError(f"{line!r}: capstone says {insn.mnemonic!r}")
        texts.append(f"{insn.mnemonic} {insn.op_str}".strip())
        if branch or tpl.cls == "stack":
            continue
        # capstone 5 gives no access information for RISC-V: the first operand is the
        # destination of every templated instruction except stores and fences.
        dest = insn.op_str.split(",", 1)[0].strip()
        if not insn.mnemonic.startswith(NO_DEST) and dest in FORBIDDEN:
            raise ValueError(f"{line!r} writes {dest}")
        mem = re.search(r"\((\w+)\)", insn.op_str)
        if mem is not None:
            allowed = set(BASES) if tpl.cls != "pcrel_load" else {auipc_dest(parts)}
            if mem.group(1) not in allowed:
                raise ValueError(f"{line!r}: base register {mem.group(1)}")
    return "; ".join(texts)


def auipc_dest(parts: list[bytes]) -> str:
    """The destination register of the AUIPC that starts a ``pcrel_load`` record."""
    return ABI[(int.from_bytes(parts[0], "little") >> 7) & 31]


def decoder_verdicts(parts: list[bytes]) -> tuple[list[str], list[str]]:
    """Return the kprobe_ref verdict and decoder class of every part at ``CODE_BASE``."""
    arch = ARCHES["riscv64"]
    verdicts, classes = [], []
    at = CODE_BASE
    for code in parts:
        dec = arch.decode(code, at, False)
        at += len(code)
        verdicts.append(dec.verdict.value)
        classes.append(dec.klass)
        if dec.verdict not in (Verdict.STEP_OUT_OF_LINE, Verdict.SIMULATE):
            raise ValueError(f"{code.hex()}: decoder verdict {dec.verdict}")
    return verdicts, classes


def part_address(parts: list[bytes], base: int, index: int) -> int:
    """Address of part ``index`` when the record starts at ``base``."""
    return base + sum(len(p) for p in parts[:index])


def check_rel(md: capstone.Cs, tpl: Template, parts: list[bytes]) -> None:
    """The PC-relative field is zero and moves the target as documented."""
    assert tpl.rel_kind is not None and tpl.rel_part is not None and tpl.rel_from is not None
    if patch_rel(parts, tpl.rel_kind, tpl.rel_part, 0) != parts:
        raise ValueError(f"{tpl.lines}: rel field not zero")
    for off in (2, 8, 0x40, 0xFE, -0x100, -6):
        patched = patch_rel(parts, tpl.rel_kind, tpl.rel_part, off)
        insn = decode_one(md, patched[tpl.rel_part])
        imms = [int(op.imm) for op in insn.operands if op.type == capstone.riscv.RISCV_OP_IMM]
        if tpl.rel_kind.startswith("hi20"):
            lo_insn = decode_one(md, patched[tpl.rel_part + 1])
            lo = [int(op.imm) for op in lo_insn.operands if op.type == capstone.riscv.RISCV_OP_IMM]
            lo += [int(op.mem.disp) for op in lo_insn.operands
                   if op.type == capstone.riscv.RISCV_OP_MEM]
            got = (imms[0] << 12) + lo[0] if imms and lo else None
            if got is None or ((got + (1 << 31)) % (1 << 32)) - (1 << 31) != off:
                raise ValueError(f"{tpl.lines}: patched {off:#x} decodes to {got}")
        elif off not in imms:
            raise ValueError(f"{tpl.lines}: patched {off:#x} decodes to {insn.op_str}")


# ---------------------------------------------------------------------------------------
# Execution in unicorn
# ---------------------------------------------------------------------------------------

UC_X = {name: getattr(ur, f"UC_RISCV_REG_X{i}") for i, name in enumerate(ABI) if i}
UC_F = [getattr(ur, f"UC_RISCV_REG_F{i}") for i in range(32)]


def new_env(rng: random.Random) -> Any:
    """Create a unicorn instance in the snippet environment."""
    uc = unicorn.Uc(unicorn.UC_ARCH_RISCV, unicorn.UC_MODE_RISCV64)
    uc.reg_write(ur.UC_RISCV_REG_MSTATUS, uc.reg_read(ur.UC_RISCV_REG_MSTATUS) | MSTATUS_FS)
    uc.mem_map(CODE_BASE, CODE_SIZE, unicorn.UC_PROT_READ | unicorn.UC_PROT_EXEC)
    uc.mem_map(DATA_BASE, DATA_SIZE, unicorn.UC_PROT_READ | unicorn.UC_PROT_WRITE)
    uc.mem_map(STACK_BASE, STACK_SIZE, unicorn.UC_PROT_READ | unicorn.UC_PROT_WRITE)
    uc.mem_write(DATA_BASE, rng.randbytes(DATA_SIZE))
    uc.mem_write(STACK_BASE, rng.randbytes(STACK_SIZE))
    for name in RANDOM_GPRS:
        uc.reg_write(UC_X[name], rng.getrandbits(64))
    for name, value in BASES.items():
        uc.reg_write(UC_X[name], value)
    uc.reg_write(UC_X["sp"], STACK_TOP)
    for reg in UC_F:
        uc.reg_write(reg, rng.getrandbits(64))
    uc.reg_write(ur.UC_RISCV_REG_FCSR, 0)
    return uc


def execute(tpl: Template, parts: list[bytes], seed: int) -> str | None:
    """Run one record once in the snippet environment; return a problem or ``None``."""
    rng = random.Random(seed)
    uc = new_env(rng)
    end = part_address(parts, CODE_BASE, len(parts))
    branch = tpl.cls in BRANCH_CLASSES
    if tpl.rel_kind is not None:
        assert tpl.rel_part is not None and tpl.rel_from is not None
        target = end if branch else DATA_BASE + LIT_TARGET_OFFSET
        pc = part_address(parts, CODE_BASE, tpl.rel_from)
        parts = patch_rel(parts, tpl.rel_kind, tpl.rel_part, target - pc)
    uc.mem_write(CODE_BASE, b"".join(parts))
    accesses: list[tuple[int, int, int]] = []

    def hook(_uc: Any, access: int, address: int, size: int, _value: int,
             _user: object) -> None:
        accesses.append((access, address, size))

    uc.hook_add(unicorn.UC_HOOK_MEM_READ | unicorn.UC_HOOK_MEM_WRITE, hook)
    try:
        uc.emu_start(CODE_BASE, end, count=len(parts) + 1)
    except unicorn.UcError as exc:
        return f"unicorn: {exc}"
    if uc.reg_read(ur.UC_RISCV_REG_PC) != end:
        return "did not reach the end of the record"
    for name, want in (*BASES.items(), ("sp", STACK_TOP)):
        if uc.reg_read(UC_X[name]) != want:
            return f"{name} changed"
    for _access, address, size in accesses:
        in_data = address >= DATA_BASE and address + size <= DATA_BASE + DATA_SIZE
        in_stack = (tpl.cls == "stack" and address >= STACK_TOP - STACK_SCRATCH
                    and address + size <= STACK_TOP)
        if not (in_data or in_stack):
            return f"access outside the buffers at {address:#x}"
    return None


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
        "syntax": "LLVM integrated assembler via ziglang (generic-rv64 = RV64GC), "
                  ".option norelax, .option rvc only for c.* lines",
        "cpu_model": "unicorn RV64 default CPU, mstatus.FS = Dirty",
        "code_base": CODE_BASE,
        "data_base": DATA_BASE,
        "data_size": DATA_SIZE,
        "stack_base": STACK_BASE,
        "stack_size": STACK_SIZE,
        "sp": STACK_TOP,
        "min_stack_free_below_sp": STACK_SCRATCH,
        "base_registers": dict(BASES),
        "s2": "data_base (standard loads/stores/AMOs)",
        "s3": "data_base + 0x800 (standard loads/stores/AMOs, offsets -0x800..0x7ff)",
        "s0": "data_base (compressed loads/stores: base must be x8-x15)",
        "s1": "data_base + 0x800 (compressed loads/stores)",
        "other_gprs": "random 64-bit values",
        "f0_31": "random 64-bit values",
        "fcsr": 0,
        "never_written": ["s0", "s1", "s2", "s3", "sp", "pc"],
        "stack_records": "balanced sequences (2-4 insns), net sp change 0, touch only "
                         "[sp-512, sp)",
        "memory_operands": "base + immediate, base s0-s3 (the AUIPC result in pcrel_load), "
                           "inside the buffer",
        "pc_relative": "pcrel_load hi20/lo12 fields are zero in the pool; set them so "
                       "address(rel_from) + offset = the target (generator: data_base + "
                       f"{LIT_TARGET_OFFSET:#x})",
        "branch_offsets": "zero field of kind rel_kind in part rel_part; target = "
                          "address(rel_from) + offset",
        "excluded": ["LR/SC (rejected)", "CSR access (rejected)", "ecall/ebreak/fence.i",
                     "Zb* (unicorn 2.1 raises on sh1add)", "register-indexed addressing (none "
                     "exists)"],
    }


def generate(out_dir: Path) -> dict[str, Any]:
    """Build, check, execute and write the pool; return the manifest."""
    templates = build_templates()
    md = make_cs()
    with tempfile.TemporaryDirectory() as tmp:
        asm = assemble(templates, Path(tmp))
    label_starts = [s for st in asm.starts for s in st]
    cs_starts = [i.address for i in md.disasm(asm.text, 0)]
    if cs_starts != label_starts:
        raise SystemExit("capstone and label split disagree")
    if asm.relocs:
        raise SystemExit(f"unexpected relocations at {asm.relocs}")

    records: list[dict[str, Any]] = []
    dropped: list[dict[str, str]] = []
    seen: set[str] = set()
    for ri, tpl in enumerate(templates):
        parts = asm.parts[ri]
        text = check_static(md, tpl, parts)
        if tpl.rel_kind is not None:
            check_rel(md, tpl, parts)
        verdicts, classes = decoder_verdicts(parts)
        code = b"".join(parts)
        if code.hex() in seen:
            raise SystemExit(f"duplicate record {text}")
        seen.add(code.hex())
        error = None
        for run in range(3):
            error = execute(tpl, parts, seed=ri * 7919 + run)
            if error is not None:
                break
        if error is not None:
            dropped.append({"asm": "; ".join(tpl.lines), "hex": code.hex(), "reason": error})
            continue
        records.append({
            "hex": code.hex(),
            "asm": text,
            "len": len(code),
            "class": tpl.cls,
            "insns": len(parts),
            "parts": [p.hex() for p in parts],
            "rel_kind": tpl.rel_kind,
            "rel_part": tpl.rel_part,
            "rel_from": tpl.rel_from,
            "verdict": verdicts,
            "decoder_class": classes,
        })

    out_dir.mkdir(parents=True, exist_ok=True)
    body = "".join(json.dumps(r) + "\n" for r in records).encode()
    (out_dir / "pool.jsonl").write_bytes(body)
    counts = Counter(r["class"] for r in records)
    manifest: dict[str, Any] = {
        "generator": "tools/gen_riscv64_pool.py",
        "command": COMMAND,
        "assemble_command": ASSEMBLE_COMMAND,
        "versions": tool_versions(),
        "environment": environment_doc(),
        "record_count": len(records),
        "class_counts": dict(sorted(counts.items())),
        "verdict_counts": dict(sorted(Counter(v for r in records
                                              for v in r["verdict"]).items())),
        "compressed_parts": sum(1 for r in records for p in r["parts"] if len(p) == 4),
        "branch_classes": list(BRANCH_CLASSES),
        "pool_sha256": hashlib.sha256(body).hexdigest(),
        "dropped": dropped,
        "straight_line_count": sum(1 for r in records if r["class"] not in BRANCH_CLASSES),
        "branch_count": sum(1 for r in records if r["class"] in BRANCH_CLASSES),
        "record_fields": {
            "hex": "whole record encoding (little-endian)",
            "asm": "capstone rendering, '; '-joined for sequences",
            "len": "total length in bytes",
            "class": "instruction family; branch classes listed in branch_classes",
            "insns": "number of instructions (1-4)",
            "parts": "per-instruction encodings (2 bytes: compressed)",
            "rel_kind": "PC-relative field to set: b, j, cj, cb, hi20_lo12i, hi20_lo12s "
                        "(null: none)",
            "rel_part": "index of the part holding the field (the AUIPC for hi20_lo12*; "
                        "the low 12 bits are in the next part)",
            "rel_from": "index of the part whose address the offset is relative to",
            "verdict": "kprobe_ref decoder verdict of each part (step or simulate)",
            "decoder_class": "kprobe_ref decoder class of each part",
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
        print(f"  {cls:14s} {n}")
    for d in manifest["dropped"]:
        print(f"dropped: {d['asm']}: {d['reason']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
