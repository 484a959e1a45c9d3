#!/usr/bin/env python3
"""Generate the committed pool of aarch64 instruction encodings for snippet property tests.

Output: ``tests/vectors/aarch64/pool.jsonl`` (one record per line) and
``tests/vectors/aarch64/pool.manifest.json``.  Regenerate from the repository root with::

    python tools/gen_aarch64_pool.py

Templates are assembled with the LLVM integrated assembler shipped in the ``ziglang`` wheel
(``.arch armv8.2-a+lse+rcpc+crc+fp16+aes`` so LSE atomics, LDAPR, CRC32, half precision
and AESE are accepted)::

    python -m ziglang cc -target aarch64-freestanding-none -c pool.S -o pool.o

Every instruction gets its own label; its 4 bytes are cut out of ``.text`` using the symbol
table (pyelftools), and the split is cross-checked against capstone (same boundaries, the
mnemonic the template names).  Each record is given to the kprobe_ref decoder
(``ARCHES["aarch64"].decode``): records it would reject are an error (none are templated),
and the verdict and decoder class of every part are stored.  Each record is then executed
three times in unicorn (``UC_CPU_ARM64_MAX``, FP/SIMD enabled through CPACR_EL1.FPEN) in the
snippet environment below; records unicorn refuses are dropped and listed in the manifest.

Snippet environment (the contract between this pool and the tests that use it):

* Code is mapped at ``CODE_BASE``; the data buffer lies ``DATA_BASE - CODE_BASE`` = 512 KiB
  above it, within the +-1 MiB reach of LDR (literal) and ADR.
* ``x19`` holds ``DATA_BASE`` (start of the 4096-byte read-write data buffer, random bytes)
  and ``x20`` holds ``DATA_BASE + 0x800`` (its middle, so negative offsets stay inside).
* ``x21`` holds ``DATA_BASE + 0x800`` too; it is the writeback register: only ``mem_wb``
  records (pre/post-indexed accesses) change it, each by at most +-0x40, and their accesses
  stay within +-0x100 of it, so up to 16 such records in a row stay inside the buffer.
* ``sp`` holds ``STACK_TOP`` (16-byte aligned) with 4096 bytes mapped below and above it;
  only ``stack`` records touch it: balanced sequences that restore ``sp`` and touch only
  the 512 bytes below it.
* Every other general register x0-x18, x22-x30, q0-q31 and NZCV hold random values; FPCR is
  0 (round to nearest, no traps, no flush-to-zero), FPSR 0.
* Records never write x19, x20, sp or the PC (x21 only in ``mem_wb``).  Memory operands are
  base + immediate only (no register offsets), in the buffer.  No exclusives, no system
  instructions (MRS/MSR/barriers/cache maintenance), no exception generation.  Division
  by zero does not trap on aarch64, so SDIV/UDIV are included.
* PC-relative straight-line records: ``pcrel`` (ADR/ADRP; the result register is written,
  no memory is accessed, the immediate is left as assembled), ``literal`` (LDR W/X/S/D/Q,
  LDRSW and PRFM literal: ``rel_kind`` = ``imm19`` - users set the imm19 field at
  ``rel_part`` so that ``address(rel_from) + offset`` lands in the buffer, 16-byte aligned;
  the generator and the tests use ``DATA_BASE + 0x400``), ``pcrel_load`` (``adr x9, .;
  ldr x0, [x9]`` style pairs, ``rel_kind`` = ``adr``, and ``adrp x9, .; ldr x0, [x9, #0x400]``
  pairs, ``rel_kind`` = ``adrp``: users set the page offset so that x9 = the buffer's
  page; the data buffer is page-aligned).

Branch templates (classes ending in ``_branch``) carry a zero offset field: ``rel_kind``
(``imm26`` for B/BL, ``imm19`` for B.cond/CBZ/CBNZ, ``imm14`` for TBZ/TBNZ, ``adr`` for the
ADR of an ``adr x9, .; br x9`` / ``blr x9`` / ``adr x30, .; ret`` pair), ``rel_part`` (the
part holding the field) and ``rel_from`` (the part whose address the offset is relative
to).  Target = address of part ``rel_from`` + offset; offsets are multiples of 4 and the
reach is +-128 MiB (imm26), +-1 MiB (imm19, adr) or +-32 KiB (imm14).  ``cc`` is the
condition (0-15) of B.cond and of the conditional-select/compare records.  BL/BLR write
x30 (a random register, never a base).
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
import unicorn.arm64_const as ua
from poolkit import Assembled, assemble_lines, label

from kprobe_ref.arch import ARCHES, Verdict

# unicorn's bindings are only partially annotated; treat the module as dynamically typed.
unicorn: Any = _unicorn

REPO = Path(__file__).resolve().parent.parent
OUT_DIR = REPO / "tests" / "vectors" / "aarch64"
COMMAND = "python tools/gen_aarch64_pool.py"
ASSEMBLE_COMMAND = "python -m ziglang cc -target aarch64-freestanding-none -c pool.S -o pool.o"
ARCH_DIRECTIVE = ".arch armv8.2-a+lse+rcpc+crc+fp16+aes"

CODE_BASE = 0x0100_0000
CODE_SIZE = 0x1_0000
DATA_BASE = 0x0108_0000
DATA_SIZE = 0x1000
STACK_BASE = 0x0120_0000
STACK_SIZE = 0x2000
STACK_TOP = STACK_BASE + 0x1000
STACK_SCRATCH = 512
LIT_TARGET_OFFSET = 0x400
BASES = {"x19": DATA_BASE, "x20": DATA_BASE + 0x800}
WB_REG = "x21"
WB_INIT = DATA_BASE + 0x800
WB_MAX_STEP = 0x40
RANDOM_GPRS = tuple(f"x{i}" for i in range(31) if i not in (19, 20, 21))

BRANCH_CLASSES = (
    "b_branch", "bl_branch", "bcond_branch", "cbz_branch", "tbz_branch",
    "br_branch", "blr_branch", "ret_branch",
)  # fmt: skip
REL_KINDS = {"imm26": (0, 26), "imm19": (5, 19), "imm14": (5, 14)}
"""Immediate fields holding ``offset / 4``: name -> (lowest bit, width)."""

CONDS = ("eq", "ne", "hs", "lo", "mi", "pl", "vs", "vc",
         "hi", "ls", "ge", "lt", "gt", "le", "al", "nv")  # fmt: skip


@dataclass(frozen=True)
class Template:
    """One pool record before assembly: a class and 1-4 instruction lines.

    A line may end in ``// mnemonic`` to name the capstone mnemonic when it differs from
    the first word of the line (aliases).
    """

    cls: str
    lines: tuple[str, ...]
    cc: int | None = None
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

    def add(cls: str, *lines: str, cc: int | None = None, rel: str | None = None,
            part: int | None = None, frm: int | None = None) -> None:
        t.append(Template(cls, tuple(lines), cc, rel, part, frm))

    xd = Cycle([f"x{i}" for i in RANDOM_GPRS_NUM], 5)
    xs = Cycle([*(f"x{i}" for i in RANDOM_GPRS_NUM), "x19", "x20", "x21"], 7)
    wd = Cycle([f"w{i}" for i in RANDOM_GPRS_NUM], 3)
    ws = Cycle([*(f"w{i}" for i in RANDOM_GPRS_NUM), "w19", "w20", "wzr"], 11)

    def d(w: int) -> str:
        return str(xd.next() if w == 64 else wd.next())

    def s(w: int) -> str:
        return str(xs.next() if w == 64 else ws.next())

    # ---- ALU: shifted register, immediate, extended register --------------------------
    for i, op in enumerate(("add", "sub", "and", "orr", "eor", "bic", "orn", "eon")):
        for w in (64, 32):
            add("alu", f"{op} {d(w)}, {s(w)}, {s(w)}")
            sh = ("lsl", "lsr", "asr", "ror")[(i + w) % 4]
            if op in ("add", "sub") and sh == "ror":
                sh = "lsl"
            add("alu", f"{op} {d(w)}, {s(w)}, {s(w)}, {sh} #{(7 * i + 3) % w}")
    logic = {64: ("0xff00ff00ff00ff00", "0x3c3c3c3c3c3c3c3c", "0xfffffff0"),
             32: ("0xff00ff00", "0x3c3c3c3c", "0xf0f0f0f0")}
    for w in (64, 32):
        add("alu", f"add {d(w)}, {s(w)}, #0x123")
        add("alu", f"add {d(w)}, {s(w)}, #0x45, lsl #12")
        add("alu", f"sub {d(w)}, {s(w)}, #0xfff")
        add("alu", f"and {d(w)}, {s(w)}, #{logic[w][0]}")
        add("alu", f"orr {d(w)}, {s(w)}, #{logic[w][1]}")
        add("alu", f"eor {d(w)}, {s(w)}, #0x1")
        add("alu", f"adc {d(w)}, {s(w)}, {s(w)}")
        add("alu", f"sbc {d(w)}, {s(w)}, {s(w)}")
        add("alu", f"neg {d(w)}, {s(w)}, lsl #3  // neg")
        add("alu", f"mvn {d(w)}, {s(w)}  // mvn")
    add("alu", "add x3, x19, w4, uxtw #2")
    add("alu", "add x5, x6, w7, sxtb")
    add("alu", "sub x8, x9, w10, sxth #1")
    add("alu", "add w11, w12, w13, uxtb #4")
    add("alu", "add x14, sp, #0x10")
    add("alu", "sub x15, sp, x16")
    add("alu", "mov x0, sp")
    add("alu", "mov x17, x19")
    add("mov", "movz x0, #0x1234, lsl #16  // mov")
    add("mov", "movz w1, #0xbeef  // mov")
    add("mov", "movk x2, #0xcafe, lsl #48")
    add("mov", "movk w3, #0x55aa")
    add("mov", "movn x4, #0x1234, lsl #32  // mov")
    add("mov", "movn w5, #0x7  // mov")
    add("mov", "mov x6, #-0x1")
    add("mov", "mov x7, #0x5555555555555555")
    add("mov", "mov w8, w20")
    # ---- flag-setting ---------------------------------------------------------------------
    for w in (64, 32):
        add("flags", f"adds {d(w)}, {s(w)}, {s(w)}")
        add("flags", f"subs {d(w)}, {s(w)}, {s(w)}, lsl #4")
        add("flags", f"adds {d(w)}, {s(w)}, #0x7ff")
        add("flags", f"subs {d(w)}, {s(w)}, #0x1, lsl #12")
        add("flags", f"ands {d(w)}, {s(w)}, {s(w)}, ror #9")
        add("flags", f"ands {d(w)}, {s(w)}, #{logic[w][2]}")
        add("flags", f"bics {d(w)}, {s(w)}, {s(w)}")
        add("flags", f"adcs {d(w)}, {s(w)}, {s(w)}")
        add("flags", f"sbcs {d(w)}, {s(w)}, {s(w)}")
        add("flags", f"negs {d(w)}, {s(w)}  // negs")
        add("flags", f"cmp {s(w)}, {s(w)}")
        add("flags", f"cmn {s(w)}, #0x12")
        add("flags", f"tst {s(w)}, #0x8000")
    add("flags", "cmp sp, #0x40")
    add("flags", "subs x1, x19, #0x10")
    for cc in range(16):
        w = 64 if cc % 2 else 32
        if cc % 2:
            add("flags", f"ccmp {s(w)}, {s(w)}, #{cc}, {CONDS[cc]}", cc=cc)
        else:
            add("flags", f"ccmn {s(w)}, #{cc + 3}, #{15 - cc}, {CONDS[cc]}", cc=cc)
    # ---- shifts ---------------------------------------------------------------------------
    for i, op in enumerate(("lsl", "lsr", "asr", "ror")):
        for w in (64, 32):
            add("shift", f"{op} {d(w)}, {s(w)}, #{(5 * i + 1) % w}")
            add("shift", f"{op} {d(w)}, {s(w)}, {s(w)}")
    # ---- bitfield / extract -------------------------------------------------------------
    add("bitfield", "ubfm x0, x1, #3, #17  // ubfx")
    add("bitfield", "sbfm w2, w3, #7, #30  // sbfx")
    add("bitfield", "bfm x4, x5, #60, #12  // bfi")
    add("bitfield", "bfm w6, w7, #4, #9  // bfxil")
    add("bitfield", "ubfx x8, x19, #4, #12")
    add("bitfield", "sbfx x9, x10, #33, #20")
    add("bitfield", "bfi w11, w12, #8, #8")
    add("bitfield", "bfxil x13, x14, #17, #30")
    add("bitfield", "ubfiz x15, x16, #5, #20")
    add("bitfield", "sbfiz w17, w18, #3, #12")
    add("bitfield", "sxtb x22, w23")
    add("bitfield", "sxth w24, w25")
    add("bitfield", "sxtw x26, w27")
    add("bitfield", "uxtb w28, w29")
    add("bitfield", "uxth w30, w0")
    add("bitfield", "extr x1, x2, x3, #13")
    add("bitfield", "extr w4, w5, w6, #31")
    add("bitfield", "ror x7, x19, #7")
    # ---- conditional select -------------------------------------------------------------
    for cc in range(16):
        op = ("csel", "csinc", "csinv", "csneg")[cc % 4]
        w = 64 if cc % 3 else 32
        add("csel", f"{op} {d(w)}, {s(w)}, {s(w)}, {CONDS[cc]}", cc=cc)
    for cc in range(14):
        op = ("cset", "csetm", "cinc", "cneg")[cc % 4]
        w = 64 if cc % 2 else 32
        srcs = f", {s(w)}" if op in ("cinc", "cneg") else ""
        add("csel", f"{op} {d(w)}{srcs}, {CONDS[cc]}", cc=cc)
    # ---- multiply / divide ----------------------------------------------------------------
    add("mul", "madd x0, x1, x2, x3")
    add("mul", "msub w4, w5, w6, w7")
    add("mul", "mul x8, x9, x19")
    add("mul", "mneg w10, w11, w12")
    add("mul", "umulh x13, x14, x15")
    add("mul", "smulh x16, x17, x18")
    add("mul", "smaddl x22, w23, w24, x25")
    add("mul", "umaddl x26, w27, w28, x29")
    add("mul", "smsubl x30, w0, w1, x2")
    add("mul", "umull x3, w4, w5")
    add("mul", "udiv x6, x7, x8")
    add("mul", "sdiv w9, w10, w11")
    add("mul", "sdiv x12, x13, xzr")
    add("mul", "udiv w14, w15, wzr")
    # ---- bit manipulation, crc ------------------------------------------------------------
    for op in ("clz", "cls", "rbit", "rev", "rev16"):
        add("bits", f"{op} {d(64)}, {s(64)}")
        add("bits", f"{op} {d(32)}, {s(32)}")
    add("bits", "rev32 x0, x1")
    add("bits", "crc32b w2, w3, w4")
    add("bits", "crc32cx w5, w6, x7")
    add("bits", "crc32h w8, w9, w10")
    # ---- loads and stores (base + immediate) ---------------------------------------------
    base = Cycle(("x19", "x20"))
    for i, (op, reg_w, size) in enumerate((
        ("ldrb", 32, 1), ("ldrh", 32, 2), ("ldr", 32, 4), ("ldr", 64, 8),
        ("ldrsb", 32, 1), ("ldrsb", 64, 1), ("ldrsh", 32, 2), ("ldrsh", 64, 2),
        ("ldrsw", 64, 4), ("strb", 32, 1), ("strh", 32, 2), ("str", 32, 4), ("str", 64, 8),
    )):
        reg = s(reg_w) if op.startswith("st") else d(reg_w)
        off = size * (3 + 17 * i) % 0x7F8
        add("mem", f"{op} {reg}, [{base.next()}, #{off:#x}]")
        add("mem", f"{op} {reg}, [{base.next()}]")
        uop = op.replace("ldr", "ldur").replace("str", "stur")
        add("mem", f"{uop} {reg}, [x20, #-{(1 + 13 * i) % 255 + 1:#x}]")
        add("mem", f"{uop} {reg}, [x19, #{(5 + 19 * i) % 255:#x}]")
    add("mem", "ldr x0, [x19, #0x7f8]")
    add("mem", "str wzr, [x20, #0x7fc]")
    add("mem", "str xzr, [x19, #0x10]")
    add("mem", "ldp x1, x2, [x19, #0x20]")
    add("mem", "ldp w3, w4, [x20, #-0x100]")
    add("mem", "stp x5, x6, [x20, #0x1f0]")
    add("mem", "stp w7, w19, [x19, #0x44]")
    add("mem", "ldpsw x8, x9, [x19, #0x80]")
    add("mem", "ldnp x10, x11, [x20, #-0x40]")
    add("mem", "stnp x12, x13, [x19, #0x60]")
    add("mem", "ldar x14, [x19]")
    add("mem", "ldarb w15, [x20]")
    add("mem", "stlr w16, [x19]")
    add("mem", "stlrh w17, [x20]")
    add("mem", "ldapr x18, [x19]")
    add("mem", "ldtr x22, [x19, #0x20]")
    add("mem", "sttrb w23, [x20, #-0x3]")
    add("mem", "prfm pldl1keep, [x19, #0x40]")
    add("mem", "prfm pstl2strm, [x20, #0x100]")
    # ---- writeback addressing on x21 ----------------------------------------------------------
    add("mem_wb", "ldr x0, [x21, #0x10]!")
    add("mem_wb", "ldr w1, [x21], #-0x8")
    add("mem_wb", "str x2, [x21, #-0x20]!")
    add("mem_wb", "strb w3, [x21], #0x3")
    add("mem_wb", "ldrsh x4, [x21, #0x2]!")
    add("mem_wb", "ldp x5, x6, [x21, #0x10]!")
    add("mem_wb", "ldp w7, w8, [x21], #-0x18")
    add("mem_wb", "stp x9, x10, [x21, #-0x40]!")
    add("mem_wb", "stp w11, w12, [x21], #0x20")
    add("mem_wb", "ldr q0, [x21, #0x30]!")
    add("mem_wb", "str d1, [x21], #-0x10")
    add("mem_wb", "ld1 {v2.16b}, [x21], #16")
    add("mem_wb", "st1 {v3.4s, v4.4s}, [x21], #32")
    # ---- LSE atomics (single instructions: stepped) ------------------------------------------
    add("atomic", "ldadd x0, x1, [x19]")
    add("atomic", "ldaddal w2, w3, [x20]")
    add("atomic", "ldclr x4, x5, [x19]")
    add("atomic", "ldset w6, w7, [x20]")
    add("atomic", "ldeorl x8, x9, [x19]")
    add("atomic", "ldsmax w10, w11, [x20]")
    add("atomic", "ldumin x12, x13, [x19]")
    add("atomic", "swp x14, x15, [x20]")
    add("atomic", "swpab w16, w17, [x19]")
    add("atomic", "cas x18, x22, [x19]")
    add("atomic", "casal w23, w24, [x20]")
    add("atomic", "casp x24, x25, x26, x27, [x19]")
    add("atomic", "stadd w28, [x20]")
    # ---- scalar floating point ------------------------------------------------------------
    add("fp", "fmov d0, x1")
    add("fp", "fmov x2, d3")
    add("fp", "fmov s4, w5")
    add("fp", "fmov w6, s7")
    add("fp", "fmov v8.d[1], x9")
    add("fp", "fmov d10, #1.5")
    add("fp", "fmov s11, #-2.0")
    add("fp", "fmov d12, d13")
    add("fp", "fadd d14, d15, d16")
    add("fp", "fsub s17, s18, s19")
    add("fp", "fmul d20, d21, d22")
    add("fp", "fdiv s23, s24, s25")
    add("fp", "fmadd d26, d27, d28, d29")
    add("fp", "fnmsub s30, s31, s0, s1")
    add("fp", "fneg d2, d3")
    add("fp", "fabs s4, s5")
    add("fp", "fsqrt d6, d7")
    add("fp", "fmax d8, d9, d10")
    add("fp", "fminnm s11, s12, s13")
    add("fp", "fcvt d14, s15")
    add("fp", "fcvt s16, d17")
    add("fp", "fcvt h18, s19")
    add("fp", "scvtf d20, x21")
    add("fp", "ucvtf s22, w23")
    add("fp", "fcvtzs x24, d25")
    add("fp", "fcvtzu w26, s27")
    add("fp", "frintx d28, d29")
    add("fp", "fadd h0, h1, h2")
    add("fp", "fcmp d3, d4")
    add("fp", "fcmpe s5, #0.0")
    add("fp", "fccmp d6, d7, #4, ne", cc=1)
    add("fp", "fcsel d8, d9, d10, gt", cc=12)
    # ---- Advanced SIMD ----------------------------------------------------------------------
    for line in (
        "add v0.4s, v1.4s, v2.4s", "sub v3.2d, v4.2d, v5.2d", "mul v6.8h, v7.8h, v8.8h",
        "and v9.16b, v10.16b, v11.16b", "orr v12.16b, v13.16b, v14.16b",
        "eor v15.8b, v16.8b, v17.8b", "bic v18.16b, v19.16b, v20.16b",
        "mov v21.16b, v22.16b", "movi v23.2d, #0xff00ff00ff00ff00", "movi v24.4s, #0x42, lsl #8",
        "mvni v25.8h, #0x3", "dup v26.4s, w0", "dup v27.16b, v28.b[5]",
        "ins v29.s[2], w1  // mov", "mov v30.d[0], v31.d[1]", "umov w2, v0.h[3]",
        "smov x3, v1.b[9]",
        "ext v2.16b, v3.16b, v4.16b, #7", "zip1 v5.4s, v6.4s, v7.4s",
        "uzp2 v8.8h, v9.8h, v10.8h", "trn1 v11.16b, v12.16b, v13.16b",
        "tbl v14.16b, {v15.16b}, v16.16b", "cnt v17.8b, v18.8b", "addv s19, v20.4s",
        "uaddlv h21, v22.16b", "shl v23.2d, v24.2d, #13", "ushr v25.4s, v26.4s, #7",
        "sshr v27.8h, v28.8h, #3", "cmeq v29.4s, v30.4s, v31.4s", "cmgt v0.2d, v1.2d, #0",
        "fadd v2.2d, v3.2d, v4.2d", "fmul v5.4s, v6.4s, v7.4s", "fmla v8.4s, v9.4s, v10.s[1]",
        "umull v11.2d, v12.2s, v13.2s", "sqadd v14.8h, v15.8h, v16.8h",
        "uqsub v17.16b, v18.16b, v19.16b", "addp v20.4s, v21.4s, v22.4s",
        "rev64 v23.16b, v24.16b", "xtn v25.4h, v26.4s", "uxtl v27.8h, v28.8b  // ushll",
        "scvtf v29.2d, v30.2d", "fcvtzs v31.4s, v0.4s", "bsl v1.16b, v2.16b, v3.16b",
        "aese v4.16b, v5.16b",
    ):
        add("simd", line)
    # ---- FP/SIMD loads and stores -------------------------------------------------------------
    add("fp_mem", "ldr b0, [x19, #0x11]")
    add("fp_mem", "ldr h1, [x20, #0x22]")
    add("fp_mem", "ldr s2, [x19, #0x44]")
    add("fp_mem", "ldr d3, [x20, #0x88]")
    add("fp_mem", "ldr q4, [x19, #0x110]")
    add("fp_mem", "str b5, [x20, #0x7]")
    add("fp_mem", "str h6, [x19, #0x2e]")
    add("fp_mem", "str s7, [x20, #0x7fc]")
    add("fp_mem", "str d8, [x19, #0x7f8]")
    add("fp_mem", "str q9, [x20, #0x7f0]")
    add("fp_mem", "ldur q10, [x20, #-0xf1]")
    add("fp_mem", "stur d11, [x20, #-0x9]")
    add("fp_mem", "ldp q12, q13, [x19, #0x40]")
    add("fp_mem", "stp d14, d15, [x20, #-0x80]")
    add("fp_mem", "ldp s16, s17, [x19, #0x1c]")
    add("fp_mem", "ld1 {v18.16b}, [x19]")
    add("fp_mem", "ld1 {v19.4s, v20.4s}, [x20]")
    add("fp_mem", "ld1 {v21.2d, v22.2d, v23.2d}, [x19]")
    add("fp_mem", "st1 {v24.8h}, [x20]")
    add("fp_mem", "st1 {v25.16b, v26.16b, v27.16b, v28.16b}, [x19]")
    add("fp_mem", "ld1r {v29.4s}, [x20]")
    add("fp_mem", "ld2 {v30.4s, v31.4s}, [x19]")
    add("fp_mem", "st2 {v0.8h, v1.8h}, [x20]")
    add("fp_mem", "ld1 {v2.s}[3], [x19]")
    add("fp_mem", "st1 {v3.d}[1], [x20]")
    add("fp_mem", "ld4 {v4.16b, v5.16b, v6.16b, v7.16b}, [x20]")
    # ---- hints ----------------------------------------------------------------------------
    add("nop", "nop")
    add("nop", "yield")
    add("nop", "hint #0x22  // bti")
    # ---- balanced stack sequences --------------------------------------------------------------
    add("stack", "stp x29, x30, [sp, #-0x10]!", "ldp x0, x1, [sp], #0x10")
    add("stack", "str x2, [sp, #-0x10]!", "ldr x3, [sp], #0x10")
    add("stack", "sub sp, sp, #0x40", "stp q0, q1, [sp, #0x10]", "add sp, sp, #0x40")
    add("stack", "sub sp, sp, #0x20", "str x4, [sp, #8]", "ldr x5, [sp, #8]",
        "add sp, sp, #0x20")
    add("stack", "stp x6, x7, [sp, #-0x20]!", "ldp x8, x9, [sp, #0x8]", "add sp, sp, #0x20")
    add("stack", "stur x10, [sp, #-0x8]", "ldur w11, [sp, #-0x6]")
    add("stack", "mov x12, sp", "sub sp, sp, #0x1f0", "mov sp, x12")
    # ---- PC-relative (simulated) -------------------------------------------------------------
    add("pcrel", "adr x0, . + 0x1234")
    add("pcrel", "adr x1, . - 0x3")
    add("pcrel", "adr x30, .")
    add("pcrel", "adrp x2, #0x5000")
    add("pcrel", "adrp x3, #-0x12345000")
    add("pcrel", "adrp x4, #0")
    for line in ("ldr w0, .", "ldr x1, .", "ldrsw x2, .", "ldr s3, .", "ldr d4, .",
                 "ldr q5, .", "prfm pldl1keep, .", "ldr x30, .", "ldr q31, ."):
        add("literal", line, rel="imm19", part=0, frm=0)
    add("pcrel_load", "adr x9, .", "ldr x0, [x9]", rel="adr", part=0, frm=0)
    add("pcrel_load", "adr x9, .", "ldr q1, [x9, #0x10]", rel="adr", part=0, frm=0)
    add("pcrel_load", "adr x10, .", "str w2, [x10, #0x8]", rel="adr", part=0, frm=0)
    add("pcrel_load", "adrp x9, #0", "ldr x3, [x9, #0x400]", rel="adrp", part=0, frm=0)
    add("pcrel_load", "adrp x11, #0", "add x11, x11, #0x123", "ldrb w4, [x11]",
        rel="adrp", part=0, frm=0)
    # ---- branch templates ---------------------------------------------------------------------
    add("b_branch", "b .", rel="imm26", part=0, frm=0)
    add("bl_branch", "bl .", rel="imm26", part=0, frm=0)
    for cc in range(16):
        add("bcond_branch", f"b.{CONDS[cc]} .", cc=cc, rel="imm19", part=0, frm=0)
    for op in ("cbz", "cbnz"):
        for r in ("x0", "w7", "x19", "w30"):
            add("cbz_branch", f"{op} {r}, .", rel="imm19", part=0, frm=0)
    for op in ("tbz", "tbnz"):
        for r, bit in (("x1", 0), ("w5", 7), ("x12", 33), ("x30", 63), ("w19", 12)):
            add("tbz_branch", f"{op} {r}, #{bit}, .", rel="imm14", part=0, frm=0)
    add("br_branch", "adr x9, .", "br x9", rel="adr", part=0, frm=0)
    add("br_branch", "adr x16, .", "br x16", rel="adr", part=0, frm=0)
    add("blr_branch", "adr x9, .", "blr x9", rel="adr", part=0, frm=0)
    add("blr_branch", "adr x17, .", "blr x17", rel="adr", part=0, frm=0)
    add("blr_branch", "adr x30, .", "blr x30", rel="adr", part=0, frm=0)
    add("ret_branch", "adr x30, .", "ret", rel="adr", part=0, frm=0)
    add("ret_branch", "adr x9, .", "ret x9", rel="adr", part=0, frm=0)
    return t


RANDOM_GPRS_NUM = tuple(i for i in range(31) if i not in (19, 20, 21))


# ---------------------------------------------------------------------------------------
# Offset fields
# ---------------------------------------------------------------------------------------


def patch_rel(word: int, kind: str, offset: int, pc: int = 0) -> int:
    """Return ``word`` with its PC-relative field set so that it addresses ``pc + offset``.

    ``adrp`` takes the page difference of ``pc + offset`` and ``pc``.
    """
    if kind in REL_KINDS:
        lo, width = REL_KINDS[kind]
        if offset % 4:
            raise ValueError(f"offset {offset:#x} not a multiple of 4")
        value = offset >> 2
        if not -(1 << (width - 1)) <= value < 1 << (width - 1):
            raise ValueError(f"offset {offset:#x} out of range for {kind}")
        mask = ((1 << width) - 1) << lo
        return (word & ~mask) | ((value << lo) & mask)
    if kind in ("adr", "adrp"):
        value = offset if kind == "adr" else ((pc + offset) >> 12) - (pc >> 12)
        if not -(1 << 20) <= value < 1 << 20:
            raise ValueError(f"offset {offset:#x} out of range for {kind}")
        immlo, immhi = value & 3, (value >> 2) & 0x7FFFF
        return (word & ~((3 << 29) | (0x7FFFF << 5))) | (immlo << 29) | (immhi << 5)
    raise ValueError(f"unknown rel kind {kind}")


def rel_field(word: int, kind: str) -> int:
    """Return the raw (unsigned) contents of the PC-relative field of ``word``."""
    if kind in REL_KINDS:
        lo, width = REL_KINDS[kind]
        return (word >> lo) & ((1 << width) - 1)
    return ((word >> 29) & 3) | (((word >> 5) & 0x7FFFF) << 2)


# ---------------------------------------------------------------------------------------
# Assembly and splitting
# ---------------------------------------------------------------------------------------


def expected_mnemonic(line: str) -> str:
    """Return the capstone mnemonic the template line should decode to."""
    if "//" in line:
        return line.split("//", 1)[1].strip()
    return line.split()[0]


def assemble(templates: list[Template], workdir: Path) -> Assembled:
    """Assemble all templates and split them per line."""
    src = io.StringIO()
    src.write(f"{ARCH_DIRECTIVE}\n.text\n")
    for ri, tpl in enumerate(templates):
        for li, line in enumerate(tpl.lines):
            src.write(f"{label(ri, li)}:\n    {line.split('//', 1)[0].strip()}\n")
    src.write("p_end:\n")
    counts = [len(tpl.lines) for tpl in templates]
    return assemble_lines("aarch64-freestanding-none", src.getvalue(), counts, workdir)


# ---------------------------------------------------------------------------------------
# Static checks
# ---------------------------------------------------------------------------------------


def make_cs() -> capstone.Cs:
    """Return a detail-enabled aarch64 capstone disassembler."""
    md = capstone.Cs(capstone.CS_ARCH_ARM64, capstone.CS_MODE_ARM)
    md.detail = True
    return md


def decode_one(md: capstone.Cs, code: bytes, addr: int = 0) -> Any:
    """Decode exactly one 4-byte instruction or raise."""
    insns = list(md.disasm(code, addr))
    if len(code) != 4 or len(insns) != 1 or insns[0].size != 4:
        raise ValueError(f"{code.hex()}: capstone decodes {[i.size for i in insns]}")
    return insns[0]


FORBIDDEN = ("x19", "w19", "x20", "w20", "sp", "wsp")


def first_operand(op_str: str) -> str:
    """Return the first operand of capstone's rendering (a register name or list)."""
    return op_str.split(",", 1)[0].strip()


STORE_PREFIXES = ("st", "prfm", "cmp", "cmn", "tst", "fcmp", "fccmp", "ccmp", "ccmn")


def check_static(md: capstone.Cs, tpl: Template, parts: list[bytes]) -> str:
    """Validate one record against the pool rules; return its capstone rendering."""
    texts: list[str] = []
    branch = tpl.cls in BRANCH_CLASSES
    for line, code in zip(tpl.lines, parts, strict=True):
        insn = decode_one(md, code)
        want = expected_mnemonic(line)
        if insn.mnemonic != want:
            raise ValueError(f"{line!r}: capstone says {insn.mnemonic!r}")
        texts.append(f"{insn.mnemonic} {insn.op_str}".strip())
        if branch or tpl.cls == "stack":
            continue
        # capstone 5's regs_access is incomplete for aarch64 (LSE destinations) and lists
        # sp for ``cmp sp, #imm``: derive the written registers from the operands instead.
        written: set[str] = set()
        wb = re.search(r"\[(x\d+|sp)\b[^]]*\](!|, #)", insn.op_str)
        if wb is not None:
            written.add(wb.group(1))
        if not insn.mnemonic.startswith(STORE_PREFIXES):
            written.add(first_operand(insn.op_str))
        if insn.mnemonic.startswith(("ld", "cas", "swp")) and "," in insn.op_str:
            # LSE: the second operand is the destination; pairs: the second register too
            written.add(insn.op_str.split(",")[1].strip())
        bad = written & set(FORBIDDEN)
        if tpl.cls == "mem_wb":
            bad.discard(WB_REG)
        elif "x21" in written and "[x21" in insn.op_str:
            bad.add("x21")
        if bad:
            raise ValueError(f"{line!r} writes {sorted(bad)}")
        mem = re.search(r"\[(x\d+|sp)\b", insn.op_str)
        if mem is not None:
            basereg = mem.group(1)
            allowed = {"x19", "x20"} | ({"x21"} if tpl.cls == "mem_wb" else set()) | (
                {"x9", "x10", "x11"} if tpl.cls == "pcrel_load" else set())
            if basereg not in allowed:
                raise ValueError(f"{line!r}: base register {basereg}")
    return "; ".join(texts)


def decoder_verdicts(parts: list[bytes]) -> tuple[list[str], list[str]]:
    """Return the kprobe_ref verdict and decoder class of every part at ``CODE_BASE``."""
    arch = ARCHES["aarch64"]
    verdicts, classes = [], []
    for i, code in enumerate(parts):
        dec = arch.decode(code, CODE_BASE + 4 * i, False)
        verdicts.append(dec.verdict.value)
        classes.append(dec.klass)
        if dec.verdict not in (Verdict.STEP_OUT_OF_LINE, Verdict.SIMULATE):
            raise ValueError(f"{code.hex()}: decoder verdict {dec.verdict}")
    return verdicts, classes


# ---------------------------------------------------------------------------------------
# Execution in unicorn
# ---------------------------------------------------------------------------------------

UC_X = {f"x{i}": getattr(ua, f"UC_ARM64_REG_X{i}") for i in range(31)}
UC_Q = [getattr(ua, f"UC_ARM64_REG_Q{i}") for i in range(32)]


def new_uc() -> Any:
    """Create an aarch64 unicorn CPU (model MAX) with FP/SIMD enabled."""
    uc = unicorn.Uc(unicorn.UC_ARCH_ARM64, unicorn.UC_MODE_ARM)
    uc.ctl_set_cpu_model(ua.UC_CPU_ARM64_MAX)
    cpacr = uc.reg_read(ua.UC_ARM64_REG_CPACR_EL1)
    uc.reg_write(ua.UC_ARM64_REG_CPACR_EL1, cpacr | (3 << 20))
    return uc


def new_env(rng: random.Random) -> Any:
    """Create a unicorn instance in the snippet environment."""
    uc = new_uc()
    uc.mem_map(CODE_BASE, CODE_SIZE, unicorn.UC_PROT_READ | unicorn.UC_PROT_EXEC)
    uc.mem_map(DATA_BASE, DATA_SIZE, unicorn.UC_PROT_READ | unicorn.UC_PROT_WRITE)
    uc.mem_map(STACK_BASE, STACK_SIZE, unicorn.UC_PROT_READ | unicorn.UC_PROT_WRITE)
    uc.mem_write(DATA_BASE, rng.randbytes(DATA_SIZE))
    uc.mem_write(STACK_BASE, rng.randbytes(STACK_SIZE))
    for name in RANDOM_GPRS:
        uc.reg_write(UC_X[name], rng.getrandbits(64))
    for name, value in BASES.items():
        uc.reg_write(UC_X[name], value)
    uc.reg_write(UC_X[WB_REG], WB_INIT)
    uc.reg_write(ua.UC_ARM64_REG_SP, STACK_TOP)
    for reg in UC_Q:
        uc.reg_write(reg, rng.getrandbits(128))
    uc.reg_write(ua.UC_ARM64_REG_NZCV, rng.getrandbits(4) << 28)
    uc.reg_write(ua.UC_ARM64_REG_FPCR, 0)
    uc.reg_write(ua.UC_ARM64_REG_FPSR, 0)
    return uc


def place(tpl: Template, parts: list[bytes], base: int, target: int) -> bytes:
    """Return the record's bytes at ``base`` with its PC-relative field aimed at
    ``target``."""
    if tpl.rel_kind is None:
        return b"".join(parts)
    assert tpl.rel_part is not None and tpl.rel_from is not None
    out = list(parts)
    pc = base + 4 * tpl.rel_from
    word = int.from_bytes(out[tpl.rel_part], "little")
    out[tpl.rel_part] = patch_rel(word, tpl.rel_kind, target - pc, pc).to_bytes(4, "little")
    return b"".join(out)


def execute(tpl: Template, parts: list[bytes], seed: int) -> str | None:
    """Run one record once in the snippet environment; return a problem or ``None``."""
    rng = random.Random(seed)
    uc = new_env(rng)
    end = CODE_BASE + 4 * len(parts)
    branch = tpl.cls in BRANCH_CLASSES
    lit_target = DATA_BASE + LIT_TARGET_OFFSET
    if tpl.cls == "pcrel_load" and tpl.rel_kind == "adrp":
        lit_target = DATA_BASE
    code = place(tpl, parts, CODE_BASE, end if branch else lit_target)
    uc.mem_write(CODE_BASE, code)
    accesses: list[tuple[int, int, int]] = []

    def hook(_uc: Any, access: int, address: int, size: int, _value: int,
             _user: object) -> None:
        accesses.append((access, address, size))

    uc.hook_add(unicorn.UC_HOOK_MEM_READ | unicorn.UC_HOOK_MEM_WRITE, hook)
    try:
        uc.emu_start(CODE_BASE, end, count=len(parts) + 1)
    except unicorn.UcError as exc:
        return f"unicorn: {exc}"
    if uc.reg_read(ua.UC_ARM64_REG_PC) != end:
        return "did not reach the end of the record"
    for name, want in BASES.items():
        if uc.reg_read(UC_X[name]) != want:
            return f"{name} changed"
    if uc.reg_read(ua.UC_ARM64_REG_SP) != STACK_TOP:
        return "sp changed"
    wb = uc.reg_read(UC_X[WB_REG])
    if tpl.cls != "mem_wb" and wb != WB_INIT:
        return "x21 changed"
    if abs(wb - WB_INIT) > WB_MAX_STEP:
        return f"x21 moved by {wb - WB_INIT:#x}"
    for _access, address, size in accesses:
        in_data = address >= DATA_BASE and address + size <= DATA_BASE + DATA_SIZE
        if tpl.cls == "mem_wb":
            in_data = abs(address - WB_INIT) <= 0x100 and abs(address + size - WB_INIT) <= 0x100
        in_stack = (tpl.cls == "stack" and address >= STACK_TOP - STACK_SCRATCH
                    and address + size <= STACK_TOP)
        if not (in_data or in_stack):
            return f"access outside the buffers at {address:#x}"
    return None


def check_rel(md: capstone.Cs, tpl: Template, parts: list[bytes]) -> None:
    """The PC-relative field is zero and moves the target as documented."""
    assert tpl.rel_kind is not None and tpl.rel_part is not None
    word = int.from_bytes(parts[tpl.rel_part], "little")
    if rel_field(word, tpl.rel_kind) != 0:
        raise ValueError(f"{tpl.lines}: rel field not zero")
    pc = CODE_BASE + 4 * (tpl.rel_from or 0)
    for off in (4, 8, 0x40, 0x1000, -8):
        patched = patch_rel(word, tpl.rel_kind, off, pc)
        insn = decode_one(md, patched.to_bytes(4, "little"), pc)
        want = pc + off if tpl.rel_kind != "adrp" else (pc + off) & ~0xFFF
        imms = [int(op.imm) for op in insn.operands if op.type == capstone.arm64.ARM64_OP_IMM]
        if want not in imms:
            raise ValueError(f"{tpl.lines}: patched {off:#x} decodes to {insn.op_str}")


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
        "syntax": f"LLVM integrated assembler via ziglang, '{ARCH_DIRECTIVE}'",
        "cpu_model": "unicorn UC_CPU_ARM64_MAX, CPACR_EL1.FPEN = 0b11",
        "code_base": CODE_BASE,
        "data_base": DATA_BASE,
        "data_size": DATA_SIZE,
        "stack_base": STACK_BASE,
        "stack_size": STACK_SIZE,
        "sp": STACK_TOP,
        "min_stack_free_below_sp": STACK_SCRATCH,
        "base_registers": dict(BASES),
        "x19": "data_base (start of the 4096-byte read-write data buffer)",
        "x20": "data_base + 0x800 (middle of the buffer)",
        "writeback_register": WB_REG,
        "x21": f"data_base + 0x800; mem_wb records move it by at most +-{WB_MAX_STEP:#x} and "
               "access within +-0x100 of it; no other record writes it",
        "other_gprs": "x0-x18, x22-x30: random 64-bit values",
        "q0_31": "random 128-bit values",
        "nzcv": "random",
        "fpcr": 0,
        "fpsr": 0,
        "never_written": ["x19", "x20", "sp", "pc", "x21 (except mem_wb)"],
        "stack_records": "balanced sequences (2-4 insns), net sp change 0, touch only "
                         "[sp-512, sp)",
        "memory_operands": "base + immediate only, base x19/x20 (x21 in mem_wb, x9-x11 "
                           "after an ADR/ADRP in pcrel_load), inside the buffer",
        "pc_relative": "literal (imm19) and pcrel_load (adr/adrp) fields are zero in the "
                       "pool; set them so address(rel_from) + offset = the target "
                       f"(generator: literal data_base + {LIT_TARGET_OFFSET:#x}, adrp the "
                       "buffer page)",
        "branch_offsets": "zero field of kind rel_kind in part rel_part; target = "
                          "address(rel_from) + offset",
        "excluded": ["exclusives (LDXR/STXR...: rejected)", "system instructions "
                     "(MRS/MSR/barriers/DC/IC/SYS)", "SVC/HVC/SMC/BRK/HLT",
                     "pointer authentication", "register-offset addressing"],
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
            "cc": tpl.cc,
            "verdict": verdicts,
            "decoder_class": classes,
        })

    out_dir.mkdir(parents=True, exist_ok=True)
    body = "".join(json.dumps(r) + "\n" for r in records).encode()
    (out_dir / "pool.jsonl").write_bytes(body)
    counts = Counter(r["class"] for r in records)
    manifest: dict[str, Any] = {
        "generator": "tools/gen_aarch64_pool.py",
        "command": COMMAND,
        "assemble_command": ASSEMBLE_COMMAND,
        "versions": tool_versions(),
        "environment": environment_doc(),
        "record_count": len(records),
        "class_counts": dict(sorted(counts.items())),
        "verdict_counts": dict(sorted(Counter(v for r in records
                                              for v in r["verdict"]).items())),
        "branch_classes": list(BRANCH_CLASSES),
        "pool_sha256": hashlib.sha256(body).hexdigest(),
        "dropped": dropped,
        "straight_line_count": sum(1 for r in records if r["class"] not in BRANCH_CLASSES),
        "branch_count": sum(1 for r in records if r["class"] in BRANCH_CLASSES),
        "record_fields": {
            "hex": "whole record encoding (little-endian words)",
            "asm": "capstone rendering, '; '-joined for sequences",
            "len": "total length in bytes (4 per instruction)",
            "class": "instruction family; branch classes listed in branch_classes",
            "insns": "number of instructions (1-4)",
            "parts": "per-instruction encodings",
            "rel_kind": "PC-relative field to set: imm26, imm19, imm14, adr, adrp (null: none)",
            "rel_part": "index of the part holding the field",
            "rel_from": "index of the part whose address the offset is relative to",
            "cc": "condition code 0-15 for b.cond, csel family, ccmp/ccmn, fccmp, fcsel",
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
