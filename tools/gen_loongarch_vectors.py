#!/usr/bin/env python3
"""Generate LoongArch64 reference vectors by running real code under qemu-user.

Every test case is one (or, for ``sc.w``/``sc.d``, two) instruction(s) executed
inside a static loongarch64 Linux program that this script writes as assembly,
builds with ``python -m ziglang cc`` and runs under ``qemu-loongarch64-static``.

Per case the program

1. sets fcc0..fcc7 (``ori`` + ``movgr2cf``),
2. loads all of r1..r31 from the case's data block (r31 is the base register
   and is loaded last, from itself),
3. executes the instruction(s) under test (label ``P<i>``),
4. runs a *landing block* wherever execution arrived: it parks r31 in $f1,
   uses ``pcaddi $r31, -1`` to learn its own address and keeps it in $f2,
5. saves r1..r31 (r31 via $f0), fcc0..fcc7 and the landing address into the
   case's data block.

The case's memory area (64 bytes) lives in the same block and is initialised
statically.  At the end the program writes all data blocks to stdout with one
``write`` syscall and exits; this script parses them into JSON-lines records.

Usage::

    python tools/gen_loongarch_vectors.py            # regenerate tests/vectors/loongarch64

``tools/pcode_report.py`` surveys how Ghidra's specification translates the vectors' words.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from elftools.elf.elffile import ELFFile

SEED = 0x10A6A4C4
CASES_PER_KIND = 10
REPO = Path(__file__).resolve().parent.parent
OUT_DIR = REPO / "tests" / "vectors" / "loongarch64"
QEMU = "qemu-loongarch64-static"
ZIG_TARGET = "loongarch64-linux-musl"

M64 = (1 << 64) - 1
BREAK0 = 0x002A0000  # "break 0": fills unreachable padding

# ---- data block layout (bytes) -------------------------------------------
BLOCK = 640
OFF_BEFORE = 0  # r1..r31 before (31 * 8)
OFF_PC = 248  # address of P<i>
OFF_AFTER = 264  # r1..r31 after
OFF_FCC = 512  # fcc0..fcc7 after, one byte each
OFF_LAND = 520  # landing address (from pcaddi)
OFF_SELF = 528  # address of the block itself
OFF_TGT = 536  # address of the branch target label (0 if none)
OFF_MEM = 576  # 64-byte memory area
MEM_SIZE = 64

ABI = {0: "zero", 1: "ra", 2: "tp", 3: "sp", 21: "r21", 22: "fp"}
ABI.update({4 + i: f"a{i}" for i in range(8)})
ABI.update({12 + i: f"t{i}" for i in range(9)})
ABI.update({23 + i: f"s{i}" for i in range(9)})


def r(n: int) -> str:
    return "$" + ABI[n]


def sext(v: int, bits: int) -> int:
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >> (bits - 1) else v


def u64(v: int) -> int:
    return v & M64


EDGE = [
    0,
    1,
    M64,
    0x7FFFFFFFFFFFFFFF,
    0x8000000000000000,
    0x7FFFFFFF,
    0x80000000,
    0xFFFFFFFF,
    0x100000000,
    0xFFFFFFFF80000000,
    0x00000000DEADBEEF,
    0xFFFFFFFFFFFFFFFE,
    0x5555555555555555,
    0xAAAAAAAAAAAAAAAA,
    0x0123456789ABCDEF,
    0xFEDCBA9876543210,
    0x80,
    0xFF,
    0x8000,
    0xFFFF,
]
EDGE_PAIRS = [
    (0, 0),
    (1, M64),
    (M64, M64),
    (0x7FFFFFFFFFFFFFFF, 1),
    (0x8000000000000000, M64),
    (0x7FFFFFFF, 1),
    (0x80000000, 0xFFFFFFFF),
    (0xFFFFFFFF, 0x100000000),
    (0x00000000DEADBEEF, 0x8000000000000000),
    (0xFFFFFFFF80000000, 0x7FFFFFFF),
]


def rand_val(rng: random.Random) -> int:
    c = rng.randrange(8)
    if c == 0:
        return rng.choice(EDGE)
    if c == 1:
        return u64(sext(rng.getrandbits(32), 32))  # sign-extended word
    if c == 2:
        return rng.getrandbits(31) | 0x80000000  # bit 31 set, upper half zero
    if c == 3:
        return u64(rng.randrange(-300, 300))
    return rng.getrandbits(64)


@dataclass(frozen=True)
class Sym:
    """A register value that is an address: label + addend (resolved by the linker)."""

    label: str  # "M" (this case's memory area) or "T" (this case's branch target)
    add: int


RegVal = int | Sym


@dataclass
class Case:
    kind: str
    group: str
    lines: list[str]  # instruction(s) under test; "{T}" stands for the target label
    regs: dict[int, RegVal] = field(default_factory=dict)
    fcc: list[int] | None = None
    mem: bytes | None = None  # initial 64-byte memory area (None: no memory recorded)
    layout: tuple[str, int] | None = None  # branches: ("next"|"fwd"|"back", padding)


# ---- case builders ----------------------------------------------------------


class Gen:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.cases: list[Case] = []

    # register choice: operands distinct by default, sometimes aliased / r0
    def regs(self, n: int, idx: int, *, alias: bool = True, zero_src: bool = True) -> list[int]:
        rng = self.rng
        picked = rng.sample(range(1, 32), n)
        if idx >= 6 and alias and n >= 2:
            roll = rng.random()
            if roll < 0.25:
                picked[1] = picked[0]  # rd == rj
            elif roll < 0.4 and n >= 3:
                picked[2] = picked[1]  # rj == rk
            elif roll < 0.5 and zero_src:
                picked[rng.randrange(1, n)] = 0  # a source is r0
            elif roll < 0.55:
                picked[0] = 0  # rd is r0 (write discarded)
        return picked

    def add(self, case: Case) -> None:
        self.cases.append(case)


def three_reg(g: Gen, group: str, kind: str, *, ok: Callable[[int, int], bool] | None = None,
              word_inputs: bool = False, extra: str = "",
              pairs: list[tuple[int, int]] | None = None, n: int = CASES_PER_KIND) -> None:
    rng = g.rng
    base_pairs = EDGE_PAIRS if pairs is None else pairs
    idx = 0
    tries = 0
    while idx < n:
        tries += 1
        assert tries < 10000, kind
        if idx < 6 and tries <= len(base_pairs):
            a, b = base_pairs[tries - 1]
        else:
            a, b = rand_val(rng), rand_val(rng)
        if word_inputs:
            a, b = u64(sext(a, 32)), u64(sext(b, 32))
        if ok is not None and not ok(a, b):
            continue
        rd, rj, rk = g.regs(3, idx, alias=ok is None)
        g.add(Case(kind, group, [f"{kind} {r(rd)}, {r(rj)}, {r(rk)}{extra}"], {rj: a, rk: b}))
        idx += 1


def two_reg(g: Gen, group: str, kind: str, vals: list[int] | None = None) -> None:
    rng = g.rng
    pool = vals if vals is not None else [0, M64, 0x8000000000000000, 0xFFFFFFFF, 0x1, 0x80000000]
    for idx in range(CASES_PER_KIND):
        a = pool[idx] if idx < len(pool) else rand_val(rng)
        rd, rj = g.regs(2, idx)
        g.add(Case(kind, group, [f"{kind} {r(rd)}, {r(rj)}"], {rj: a}))


def reg_imm(g: Gen, group: str, kind: str, imms: list[int],
            fmt: Callable[[int], str] = str) -> None:
    rng = g.rng
    for idx, imm in enumerate(imms):
        a = rng.choice(EDGE) if idx % 2 else rand_val(rng)
        rd, rj = g.regs(2, idx)
        g.add(Case(kind, group, [f"{kind} {r(rd)}, {r(rj)}, {fmt(imm)}"], {rj: a}))


def imm_list(rng: random.Random, lo: int, hi: int, fixed: list[int], total: int = CASES_PER_KIND,
             step: int = 1) -> list[int]:
    out = list(fixed)
    while len(out) < total:
        out.append(rng.randrange(lo, hi + 1, step))
    return out


# ---- groups -----------------------------------------------------------------


def gen_alu(g: Gen) -> None:
    rng = g.rng
    for k in ["add.w", "add.d", "sub.w", "sub.d", "slt", "sltu", "maskeqz", "masknez",
              "nor", "and", "or", "xor", "orn", "andn"]:
        three_reg(g, "alu", k)
    for k in ["alsl.w", "alsl.wu", "alsl.d"]:
        for sa in (1, 2, 3, 4):
            three_reg(g, "alu", k, extra=f", {sa}", n=3)
    si12 = [-2048, 2047, 0, 1, -1, 0x7FF, -0x800 + 1]
    for k in ["addi.w", "addi.d", "slti", "sltui", "lu52i.d"]:
        reg_imm(g, "alu", k, imm_list(rng, -2048, 2047, si12))
    for k in ["andi", "ori", "xori"]:
        reg_imm(g, "alu", k, imm_list(rng, 0, 4095, [0, 4095, 1, 0x800, 0x7FF]))
    reg_imm(g, "alu", "addu16i.d", imm_list(rng, -32768, 32767, [-32768, 32767, 0, 1, -1]))
    for k in ["lu12i.w", "lu32i.d"]:
        imms = imm_list(rng, -524288, 524287, [-524288, 524287, 0, 1, -1, 0x80000 - 2])
        for idx, imm in enumerate(imms):
            rd = g.regs(1, idx)[0]
            g.add(Case(k, "alu", [f"{k} {r(rd)}, {imm}"], {rd: rand_val(rng)}))
    # movgr2cf / movcf2gr
    for idx in range(CASES_PER_KIND):
        cd = idx % 8
        rj = g.regs(1, idx)[0]
        edge = [0, 1, M64, 2, 0xFFFFFFFFFFFFFFFE, 0x8000000000000000]
        v = edge[idx] if idx < len(edge) else rand_val(rng)
        fcc = [rng.randrange(2) for _ in range(8)]
        fcc[cd] = 1 - (v & 1) if idx % 2 else fcc[cd]
        g.add(Case("movgr2cf", "alu", [f"movgr2cf $fcc{cd}, {r(rj)}"], {rj: v}, fcc=fcc))
    for idx in range(CASES_PER_KIND):
        cj = (idx * 3) % 8
        rd = g.regs(1, idx)[0]
        fcc = [rng.randrange(2) for _ in range(8)]
        fcc[cj] = idx % 2
        g.add(Case("movcf2gr", "alu", [f"movcf2gr {r(rd)}, $fcc{cj}"], {rd: rand_val(rng)},
                   fcc=fcc))


def gen_shift(g: Gen) -> None:
    rng = g.rng
    amounts = [0, 1, 31, 32, 63, 0xFFFFFFFFFFFFFFC1, 0x20, 0x100000003]
    for k in ["sll.w", "srl.w", "sra.w", "rotr.w", "sll.d", "srl.d", "sra.d", "rotr.d"]:
        pairs = [(rng.choice(EDGE[2:]) if i % 2 else rand_val(rng), a)
                 for i, a in enumerate(amounts)]
        for idx in range(len(pairs) + 2):
            if idx < len(pairs):
                a, b = pairs[idx]
            else:
                a, b = rand_val(rng), rand_val(rng)
            rd, rj, rk = g.regs(3, idx + 6 if idx >= len(pairs) else idx)
            g.add(Case(k, "shift", [f"{k} {r(rd)}, {r(rj)}, {r(rk)}"], {rj: a, rk: b}))
    for k in ["slli.w", "srli.w", "srai.w", "rotri.w"]:
        reg_imm(g, "shift", k, [0, 1, 31, 16, 30, 5, 0x1F, 8])
    for k in ["slli.d", "srli.d", "srai.d", "rotri.d"]:
        reg_imm(g, "shift", k, [0, 1, 31, 32, 63, 62, 33, 17])


def gen_bits(g: Gen) -> None:
    rng = g.rng
    for k in ["ext.w.b", "ext.w.h", "clo.w", "clz.w", "cto.w", "ctz.w", "clo.d", "clz.d",
              "cto.d", "ctz.d", "revb.2h", "revb.4h", "revb.2w", "revb.d", "revh.2w", "revh.d",
              "bitrev.4b", "bitrev.8b", "bitrev.w", "bitrev.d"]:
        two_reg(g, "bits", k, [0, M64, 0x8000000000000000, 0x7F, 0x80, 0x8000, 0x00FF00FF80000000,
                              0x1, 0xFFFFFFFF])
    for sa in range(4):
        three_reg(g, "bits", "bytepick.w", extra=f", {sa}", n=3)
    for sa in range(8):
        three_reg(g, "bits", "bytepick.d", extra=f", {sa}", n=2)
    pairs_w = [(31, 0), (0, 0), (31, 31), (15, 8), (7, 3), (30, 1), (16, 16), (23, 0)]
    pairs_d = [(63, 0), (0, 0), (63, 63), (31, 0), (47, 16), (5, 5), (62, 1), (63, 32), (32, 31)]
    for k, prs in [("bstrins.w", pairs_w), ("bstrpick.w", pairs_w), ("bstrins.d", pairs_d),
                   ("bstrpick.d", pairs_d)]:
        width = 64 if k.endswith("d") else 32
        for _ in range(2):
            hi, lo = sorted(rng.sample(range(width), 2), reverse=True)
            prs = [*prs, (hi, lo)]
        for idx, (msb, lsb) in enumerate(prs):
            rd, rj = g.regs(2, idx)
            g.add(Case(k, "bits", [f"{k} {r(rd)}, {r(rj)}, {msb}, {lsb}"],
                       {rd: rand_val(rng), rj: rand_val(rng)}))


def _div_ok(word: bool, signed: bool) -> Callable[[int, int], bool]:
    bits = 32 if word else 64

    def ok(a: int, b: int) -> bool:
        if b & ((1 << bits) - 1) == 0:
            return False  # division by zero: result not architecturally defined
        # signed overflow (INT_MIN / -1): not defined either
        return not (signed and sext(a, bits) == -(1 << (bits - 1)) and sext(b, bits) == -1)

    return ok


def gen_mul(g: Gen) -> None:
    for k in ["mul.w", "mulh.w", "mulh.wu", "mul.d", "mulh.d", "mulh.du", "mulw.d.w", "mulw.d.wu"]:
        three_reg(g, "mul", k)
    for k in ["div.w", "mod.w", "div.wu", "mod.wu"]:
        # LA64 leaves the *.w/*.wu divide result undefined unless inputs are sign-extended words
        three_reg(g, "mul", k, ok=_div_ok(True, not k.endswith("u")), word_inputs=True,
                  pairs=[(7, 2), (M64 - 6, 2), (0x7FFFFFFF, M64), (0xFFFFFFFF80000000, 3),
                         (0xFFFFFFFF80000001, 0xFFFFFFFF80000000), (0x12345678, 0x7FFFFFFF),
                         (100, 7)])
    for k in ["div.d", "mod.d", "div.du", "mod.du"]:
        three_reg(g, "mul", k, ok=_div_ok(False, not k.endswith("u")),
                  pairs=[(7, 2), (M64 - 6, 2), (0x7FFFFFFFFFFFFFFF, M64),
                         (0x8000000000000000, 3), (0x8000000000000001, 0x8000000000000000),
                         (M64, 0xFFFFFFFF), (100, 7)])


def gen_crc(g: Gen) -> None:
    for k in ["crc.w.b.w", "crc.w.h.w", "crc.w.w.w", "crc.w.d.w",
              "crcc.w.b.w", "crcc.w.h.w", "crcc.w.w.w", "crcc.w.d.w"]:
        three_reg(g, "crc", k)


def gen_pcrel(g: Gen) -> None:
    rng = g.rng
    for k in ["pcaddi", "pcalau12i", "pcaddu12i", "pcaddu18i"]:
        imms = imm_list(rng, -524288, 524287, [0, 1, -1, 524287, -524288, 0x1234])
        for idx, imm in enumerate(imms):
            rd = g.regs(1, idx)[0]
            g.add(Case(k, "pcrel", [f"{k} {r(rd)}, {imm}"], {rd: rand_val(rng)}))


def _mem(rng: random.Random) -> bytes:
    return bytes(rng.getrandbits(8) for _ in range(MEM_SIZE))


SIZES = {"b": 1, "h": 2, "w": 4, "d": 8, "bu": 1, "hu": 2, "wu": 4}


def _ea(rng: random.Random, size: int) -> int:
    """Offset of an aligned effective address inside the 64-byte area (room on both sides)."""
    return rng.randrange(16, 48 - size + 1, size)


def gen_mem(g: Gen) -> None:
    rng = g.rng
    offs12 = [0, -2048, 2047, -8, 8, 1, -1, 0x400, -0x3F8, 2040]
    for kind_prefix, sfx in [("ld", s) for s in ["b", "h", "w", "d", "bu", "hu", "wu"]] + [
        ("st", s) for s in ["b", "h", "w", "d"]
    ]:
        k = f"{kind_prefix}.{sfx}"
        size = SIZES[sfx]
        for idx, off in enumerate(offs12):
            ea = _ea(rng, size)
            rd, rj = g.regs(2, idx, zero_src=False)
            if rj == 0 or (kind_prefix == "ld" and rd == rj and idx % 3):
                rj = rng.choice([x for x in range(1, 32) if x != rd])
            regs: dict[int, RegVal] = {rd: rand_val(rng)} if rd else {}
            regs[rj] = Sym("M", ea - off)
            g.add(Case(k, "mem", [f"{k} {r(rd)}, {r(rj)}, {off}"], regs, mem=_mem(rng)))
    idx_vals = [0, 8, M64, 0x8000000000000000, 0x7FFFFFFFFFFFFFFF, 0x100000000]
    for kind_prefix, sfx in [("ldx", s) for s in ["b", "h", "w", "d", "bu", "hu", "wu"]] + [
        ("stx", s) for s in ["b", "h", "w", "d"]
    ]:
        k = f"{kind_prefix}.{sfx}"
        size = SIZES[sfx]
        for idx in range(CASES_PER_KIND):
            ea = _ea(rng, size)
            rd, rj, rk = rng.sample(range(1, 32), 3)
            if idx == 7 and kind_prefix == "ldx":
                rd = rj  # loaded value replaces the base
            if idx == 8:
                rd = rk if kind_prefix == "ldx" else rd
            kv = idx_vals[idx] if idx < len(idx_vals) else rand_val(rng)
            regs = {rd: rand_val(rng), rk: kv, rj: Sym("M", u64(ea - kv))}
            g.add(Case(k, "mem", [f"{k} {r(rd)}, {r(rj)}, {r(rk)}"], regs, mem=_mem(rng)))
    offs14 = [0, -32768, 32764, 4, -4, 8, 0x1000, -0x2000]
    for k in ["ldptr.w", "ldptr.d", "stptr.w", "stptr.d"]:
        size = 4 if k.endswith("w") else 8
        offs = imm_list(rng, -8192, 8191, [o // 4 for o in offs14])
        for o4 in offs:
            off = o4 * 4
            ea = _ea(rng, size)
            rd, rj = rng.sample(range(1, 32), 2)
            g.add(Case(k, "mem", [f"{k} {r(rd)}, {r(rj)}, {off}"],
                       {rd: rand_val(rng), rj: Sym("M", ea - off)}, mem=_mem(rng)))
    # bound-checked accesses: only cases where the check passes (a failing check traps)
    for base in ["ldgt", "ldle", "stgt", "stle"]:
        for sfx in ["b", "h", "w", "d"]:
            k = f"{base}.{sfx}"
            size = SIZES[sfx]
            deltas = [1, 8, 0x1000, 0x10000, 64, 3]
            if base.endswith("le"):
                deltas = [0, *deltas[:-1]]
            for delta in deltas:
                ea = _ea(rng, size)
                rd, rj, rk = rng.sample(range(1, 32), 3)
                bound = ea - delta if base.endswith("gt") else ea + delta
                g.add(Case(k, "mem", [f"{k} {r(rd)}, {r(rj)}, {r(rk)}"],
                           {rd: rand_val(rng), rj: Sym("M", ea), rk: Sym("M", bound)},
                           mem=_mem(rng)))
    # asrtle.d / asrtgt.d that do not trap (both operands of the same sign)
    for k in ["asrtle.d", "asrtgt.d"]:
        prs = [(0, 0), (1, 2), (0x7FFFFFFFFFFFFFFE, 0x7FFFFFFFFFFFFFFF), (M64 - 1, M64),
               (0x8000000000000000, M64), (5, 0x100000000)]
        for lo, hi in prs:
            if k == "asrtgt.d" and lo == hi:
                lo, hi = 3, 9
            rj, rk = rng.sample(range(1, 32), 2)
            a, b = (lo, hi) if k == "asrtle.d" else (hi, lo)
            g.add(Case(k, "mem", [f"{k} {r(rj)}, {r(rk)}"], {rj: a, rk: b}))
    for k, hints in [("dbar", [0, 0x7FFF, 0x10, 0x14, 0x700, 1]),
                     ("ibar", [0, 0x7FFF, 1, 2, 3, 4])]:
        for h in hints:
            g.add(Case(k, "mem", [f"{k} {h}"]))
    for idx, (hint, off) in enumerate([(0, 0), (8, -2048), (31, 2047), (0, 16), (8, -8),
                                       (1, 32)]):
        rj = g.regs(1, idx)[0]
        g.add(Case("preld", "mem", [f"preld {hint}, {r(rj)}, {off}"],
                   {rj: Sym("M", 24 - off)}, mem=_mem(rng)))
    # preldx is not implemented by qemu 7.2 (SIGILL), so it is not covered.


AMOS = ["amswap", "amadd", "amand", "amor", "amxor", "ammax", "ammin"]


def gen_atomic(g: Gen) -> None:
    rng = g.rng
    offs14 = [0, -32768, 32764, 4, -4, 8, 0x1000, -0x2000]
    for sfx, size in [("w", 4), ("d", 8)]:
        for off in offs14:
            ea = _ea(rng, size)
            rd, rj = rng.sample(range(1, 32), 2)
            g.add(Case(f"ll.{sfx}", "atomic", [f"ll.{sfx} {r(rd)}, {r(rj)}, {off}"],
                       {rd: rand_val(rng), rj: Sym("M", ea - off)}, mem=_mem(rng)))
        for idx, off in enumerate(offs14):
            ea = _ea(rng, size)
            rd1, rd2, rj = rng.sample(range(1, 32), 3)
            if idx == 3:
                rd2 = rd1  # store back a register that ll just loaded
            g.add(Case(f"sc.{sfx}", "atomic",
                       [f"ll.{sfx} {r(rd1)}, {r(rj)}, {off}", f"sc.{sfx} {r(rd2)}, {r(rj)}, {off}"],
                       {rd1: rand_val(rng), rd2: rand_val(rng), rj: Sym("M", ea - off)},
                       mem=_mem(rng)))
    kinds = [f"{op}{db}.{s}" for op in AMOS for db in ("", "_db") for s in ("w", "d")]
    kinds += [f"{op}{db}.{s}" for op in ("ammax", "ammin") for db in ("", "_db")
              for s in ("wu", "du")]
    for k in kinds:
        size = 8 if k[-1] == "d" or k.endswith("du") else 4
        for idx in range(8):
            ea = _ea(rng, size)
            rd, rk, rj = rng.sample(range(1, 32), 3)
            mem = bytearray(_mem(rng))
            if idx < 4:  # edge values both in memory and in rk
                mv = [0x8000000000000000, M64, 0x7FFFFFFF80000000, 0][idx]
                mem[ea:ea + size] = (mv & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
                kv = [M64, 1, 0x80000000, 0xFFFFFFFF][idx]
            else:
                kv = rand_val(rng)
            g.add(Case(k, "atomic", [f"{k} {r(rd)}, {r(rk)}, {r(rj)}"],
                       {rd: rand_val(rng), rk: kv, rj: Sym("M", ea)}, mem=bytes(mem)))


LAYOUTS: list[tuple[str, int]] = [("next", 0), ("fwd", 0), ("back", 0), ("fwd", 7), ("back", 40),
                                  ("fwd", 300)]
COND_PAIRS = [(0, 0), (1, M64), (M64, 1), (0x8000000000000000, 0x7FFFFFFFFFFFFFFF),
              (0x7FFFFFFFFFFFFFFF, 0x8000000000000000), (0x80000000, 0x7FFFFFFF), (5, 5),
              (0xFFFFFFFF, 0x100000000)]


def _signed(v: int) -> int:
    return sext(v, 64)


CONDS: dict[str, Callable[[int, int], bool]] = {
    "beq": lambda a, b: a == b,
    "bne": lambda a, b: a != b,
    "blt": lambda a, b: _signed(a) < _signed(b),
    "bge": lambda a, b: _signed(a) >= _signed(b),
    "bltu": lambda a, b: a < b,
    "bgeu": lambda a, b: a >= b,
}
TAKEN_LAYOUTS: list[tuple[str, int]] = [("fwd", 0), ("back", 0), ("fwd", 7), ("back", 40),
                                        ("fwd", 300)]


def gen_branch(g: Gen) -> None:
    rng = g.rng
    for k, cond in CONDS.items():
        # candidate operand pairs: edge pairs, then alternating random / equal pairs
        cands = list(COND_PAIRS)
        while len(cands) < 200:
            v = rand_val(rng)
            cands += [(rand_val(rng), rand_val(rng)), (v, v), (v, u64(v + rng.choice((-1, 1))))]
        taken = [p for p in cands if cond(*p)][:5]
        not_taken = [p for p in cands if not cond(*p)][:5]
        plan = [(p, TAKEN_LAYOUTS[i], "") for i, p in enumerate(taken)]
        plan += [(p, TAKEN_LAYOUTS[(i + 2) % 5], "") for i, p in enumerate(not_taken)]
        plan.append(((rand_val(rng), rand_val(rng)), ("next", 0), ""))
        plan.append(((rand_val(rng), 0), ("fwd", 1), "zero"))  # compare against $zero
        plan.append(((rand_val(rng), 0), ("back", 3), "same"))  # same register twice
        for (a, b), lay, mode in plan:
            rj, rd = rng.sample(range(1, 32), 2)
            if mode == "same":
                rd = rj
            elif mode == "zero":
                rd = 0
            g.add(Case(k, "branch", [f"{k} {r(rj)}, {r(rd)}, {{T}}"], {rj: a, rd: b},
                       layout=lay))
    big = ("fwd", 33000)  # beyond a 16-bit word offset
    for k in ["beqz", "bnez"]:
        vals = [0, 1, 0, M64, 0, 0x8000000000000000, 0, 0x100000000, 0, 0x80000000, 0]
        for idx, v in enumerate(vals):
            rj = g.regs(1, idx)[0]
            lay = big if idx >= 9 else TAKEN_LAYOUTS[(idx // 2) % 5]
            g.add(Case(k, "branch", [f"{k} {r(rj)}, {{T}}"], {rj: v}, layout=lay))
    for k in ["bceqz", "bcnez"]:
        for idx in range(12):
            cj = idx % 8
            fcc = [rng.randrange(2) for _ in range(8)]
            fcc[cj] = idx % 2
            lay = big if idx >= 10 else TAKEN_LAYOUTS[(idx // 2) % 5]
            g.add(Case(k, "branch", [f"{k} $fcc{cj}, {{T}}"], fcc=fcc, layout=lay))
    for k in ["b", "bl"]:
        for lay in [*LAYOUTS[1:], ("fwd", 70000), ("back", 2)]:
            g.add(Case(k, "branch", [f"{k} {{T}}"], {1: rand_val(rng)}, layout=lay))
    jirl = [(1, 1, 0), (0, 1, 0), (1, 4, 4), (1, 12, -4), (13, 13, 131068), (5, 6, -131072),
            (1, 1, 64), (20, 21, 8)]
    for idx, (rd, rj, off) in enumerate(jirl):
        lay = LAYOUTS[idx % len(LAYOUTS)]
        regs: dict[int, RegVal] = {rj: Sym("T", -off)}
        if rd not in (0, rj):
            regs[rd] = rand_val(rng)
        g.add(Case("jirl", "branch", [f"jirl {r(rd)}, {r(rj)}, {off}"], regs, layout=lay))


F64_EDGE = [
    0x0000000000000000,  # +0.0
    0x8000000000000000,  # -0.0
    0x3FF0000000000000,  # 1.0
    0xBFF0000000000000,  # -1.0
    0x7FF0000000000000,  # +inf
    0xFFF0000000000000,  # -inf
    0x7FF8000000000000,  # quiet NaN
    0x7FF4000000000000,  # signalling NaN
    0x0000000000000001,  # smallest subnormal
    0x7FEFFFFFFFFFFFFF,  # largest finite
]
F64_PAIRS = [(0, 0x8000000000000000), (0x3FF0000000000000, 0x3FF0000000000000),
             (0xBFF0000000000000, 0x3FF0000000000000), (0x7FF8000000000000, 0x3FF0000000000000),
             (0x3FF0000000000000, 0x7FF8000000000000), (0x7FF0000000000000, 0x7FEFFFFFFFFFFFFF),
             (0xFFF0000000000000, 0x7FF0000000000000), (1, 0)]


def gen_fp(g: Gen) -> None:
    """The FP instructions the corpus executes (la_fcc).  Records hold general registers
    and fcc only, so each case moves its operands in with movgr2fr.d and, where the result
    is an FP register, out with movfr2gr.d; $f10/$f11 are used because the landing block
    borrows $f0..$f2.  The kind names the instruction under test."""
    rng = g.rng
    for idx in range(CASES_PER_KIND):
        a = F64_EDGE[idx] if idx < 6 else rand_val(rng)
        rd, rj = g.regs(2, idx)
        g.add(Case("movgr2fr.d", "fp", [f"movgr2fr.d $f10, {r(rj)}", f"movfr2gr.d {r(rd)}, $f10"],
                   {rj: a}))
    ints = [0, 1, M64, 0x8000000000000000, 0x7FFFFFFFFFFFFFFF, 0x20000000000001,
            0xFFDFFFFFFFFFFFFF, 0x123456789ABCDEF1]
    for idx in range(CASES_PER_KIND):
        a = ints[idx] if idx < len(ints) else rand_val(rng)
        rd, rj = g.regs(2, idx)
        g.add(Case("ffint.d.l", "fp", [f"movgr2fr.d $f10, {r(rj)}", "ffint.d.l $f11, $f10",
                                       f"movfr2gr.d {r(rd)}, $f11"], {rj: a}))
    for kind in ("fcmp.clt.d", "fcmp.ceq.d"):
        for idx in range(CASES_PER_KIND):
            if idx < len(F64_PAIRS):
                a, b = F64_PAIRS[idx]
            else:
                a, b = rng.choice([*F64_EDGE, rand_val(rng)]), rand_val(rng)
            rj, rk = rng.sample(range(1, 32), 2)
            cd = rng.randrange(8)
            g.add(Case(kind, "fp", [f"movgr2fr.d $f10, {r(rj)}", f"movgr2fr.d $f11, {r(rk)}",
                                    f"{kind} $fcc{cd}, $f10, $f11"], {rj: a, rk: b},
                       fcc=[rng.randrange(2) for _ in range(8)]))


GROUPS: dict[str, Callable[[Gen], None]] = {
    "alu": gen_alu,
    "shift": gen_shift,
    "bits": gen_bits,
    "mul": gen_mul,
    "crc": gen_crc,
    "pcrel": gen_pcrel,
    "mem": gen_mem,
    "atomic": gen_atomic,
    "branch": gen_branch,
    "fp": gen_fp,
}


# ---- program emission -------------------------------------------------------


def fill_regs(rng: random.Random, case: Case) -> dict[int, RegVal]:
    regs: dict[int, RegVal] = {n: rand_val(rng) for n in range(1, 32)}
    for n, v in case.regs.items():
        if n:
            regs[n] = v
    return regs


def landing(out: list[str]) -> None:
    out += ["movgr2fr.d $f1, $r31", "pcaddi $r31, -1", "movgr2fr.d $f2, $r31",
            "movfr2gr.d $r31, $f1"]


def pad(out: list[str], words: int) -> None:
    if words:
        out.append(f".fill {words}, 4, {BREAK0:#x}")


def emit_program(cases: list[Case], rng: random.Random) -> tuple[str, list[dict[int, RegVal]],
                                                                list[list[int]]]:
    text = [".text", ".globl _start", "_start:"]
    data = [".data", ".balign 64", "DATA_BEGIN:"]
    all_regs: list[dict[int, RegVal]] = []
    all_fcc: list[list[int]] = []
    for i, c in enumerate(cases):
        regs = fill_regs(rng, c)
        fcc = c.fcc if c.fcc is not None else [rng.randrange(2) for _ in range(8)]
        all_regs.append(regs)
        all_fcc.append(fcc)
        lay = c.layout
        tgt = f"T{i}" if lay is not None else "0"
        if lay is not None and lay[0] == "next":
            tgt = f"F{i}"

        def resolve(v: RegVal, i: int = i, tgt: str = tgt) -> str:
            if isinstance(v, Sym):
                lab = f"B{i} + {OFF_MEM}" if v.label == "M" else tgt
                return f"{lab} + ({sext(v.add, 64)})"
            return f"{v:#x}"

        # data block
        data.append(f"B{i}:")
        data += [f".dword {resolve(regs[n])}" for n in range(1, 32)]
        data.append(f".dword P{i}")
        data.append(".byte " + ", ".join(str(x) for x in fcc))
        data.append(f".fill {(OFF_SELF - OFF_AFTER) // 8}, 8, 0")  # after regs, fcc, landing
        data.append(f".dword B{i}")
        data.append(f".dword {tgt}")
        data.append(f".fill {(OFF_MEM - OFF_TGT - 8) // 8}, 8, 0")
        mem = c.mem if c.mem is not None else bytes(MEM_SIZE)
        data.append(".byte " + ", ".join(str(b) for b in mem))
        # code
        text.append(f"# case {i}: {c.kind}")
        if lay is not None and lay[0] == "back":
            text.append(f"b L{i}")
            text.append(f"T{i}:")
            landing(text)
            text.append(f"b S{i}")
            pad(text, lay[1])
            text.append(f"L{i}:")
        for j, bit in enumerate(fcc):
            text += [f"ori $r1, $r0, {bit}", f"movgr2cf $fcc{j}, $r1"]
        text += [f"pcalau12i $r31, %pc_hi20(B{i})", f"addi.d $r31, $r31, %pc_lo12(B{i})"]
        text += [f"ld.d $r{n}, $r31, {8 * (n - 1)}" for n in range(1, 32)]
        text.append(f"P{i}:")
        text += [ln.replace("{T}", f"T{i}" if lay is None or lay[0] != "next" else f"F{i}")
                 for ln in c.lines]
        text.append(f"F{i}:")
        landing(text)
        if lay is not None and lay[0] == "fwd":
            text.append(f"b S{i}")
            pad(text, lay[1])
            text.append(f"T{i}:")
            landing(text)
        text.append(f"S{i}:")
        text += ["movgr2fr.d $f0, $r31", f"pcalau12i $r31, %pc_hi20(B{i})",
                 f"addi.d $r31, $r31, %pc_lo12(B{i})"]
        text += [f"st.d $r{n}, $r31, {OFF_AFTER + 8 * (n - 1)}" for n in range(1, 31)]
        text += ["movfr2gr.d $r1, $f0", f"st.d $r1, $r31, {OFF_AFTER + 240}"]
        for j in range(8):
            text += [f"movcf2gr $r1, $fcc{j}", f"st.b $r1, $r31, {OFF_FCC + j}"]
        text += ["movfr2gr.d $r1, $f2", f"st.d $r1, $r31, {OFF_LAND}"]
    data.append("DATA_END:")
    text += [
        "pcalau12i $a1, %pc_hi20(DATA_BEGIN)", "addi.d $a1, $a1, %pc_lo12(DATA_BEGIN)",
        "pcalau12i $a2, %pc_hi20(DATA_END)", "addi.d $a2, $a2, %pc_lo12(DATA_END)",
        "sub.d $a2, $a2, $a1", "ori $a0, $zero, 1", "ori $a7, $zero, 64", "syscall 0",
        "ori $a0, $zero, 0", "ori $a7, $zero, 93", "syscall 0",
    ]
    return "\n".join(text + data) + "\n", all_regs, all_fcc


def zig_cmd(src: Path, exe: Path) -> list[str]:
    return [sys.executable, "-m", "ziglang", "cc", "-target", ZIG_TARGET, "-static", "-nostdlib",
            "-fno-pie", "-no-pie", "-o", str(exe), str(src)]


def read_words(exe: Path, addr: int, n: int) -> list[int]:
    with exe.open("rb") as f:
        elf = ELFFile(f)
        for seg in elf.iter_segments():
            if seg["p_type"] != "PT_LOAD":
                continue
            lo = seg["p_vaddr"]
            if lo <= addr and addr + 4 * n <= lo + seg["p_filesz"]:
                blob = seg.data()[addr - lo: addr - lo + 4 * n]
                return list(struct.unpack(f"<{n}I", blob))
    raise ValueError(f"address {addr:#x} not in a loaded segment")


def hx(v: int) -> str:
    return f"0x{v:016x}"


def run_group(name: str, cases: list[Case], rng: random.Random,
              work: Path) -> list[dict[str, object]]:
    src = work / f"{name}.S"
    exe = work / name
    asm, regs_in, fcc_in = emit_program(cases, rng)
    src.write_text(asm)
    subprocess.run(zig_cmd(src, exe), check=True)
    with exe.open("rb") as f:
        if ELFFile(f)["e_type"] != "ET_EXEC":
            raise RuntimeError("expected a non-PIE static executable")
    proc = subprocess.run([QEMU, str(exe)], capture_output=True, check=False, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"{name}: qemu exit {proc.returncode}: {proc.stderr.decode()[-2000:]}")
    out = proc.stdout
    if len(out) != BLOCK * len(cases):
        raise RuntimeError(f"{name}: dump is {len(out)} bytes, expected {BLOCK * len(cases)}")
    records: list[dict[str, object]] = []
    for i, c in enumerate(cases):
        blk = out[i * BLOCK:(i + 1) * BLOCK]
        before = struct.unpack_from("<31Q", blk, OFF_BEFORE)
        after = struct.unpack_from("<31Q", blk, OFF_AFTER)
        (pc,) = struct.unpack_from("<Q", blk, OFF_PC)
        (land,) = struct.unpack_from("<Q", blk, OFF_LAND)
        (self_addr,) = struct.unpack_from("<Q", blk, OFF_SELF)
        (tgt,) = struct.unpack_from("<Q", blk, OFF_TGT)
        fcc_after = list(blk[OFF_FCC:OFF_FCC + 8])
        mem_after = blk[OFF_MEM:OFF_MEM + MEM_SIZE]
        for n in range(1, 32):  # the program really started from the intended constants
            v = regs_in[i][n]
            if isinstance(v, int) and before[n - 1] != v:
                raise RuntimeError(f"{name} case {i}: r{n} before mismatch")
        nwords = len(c.lines)
        words = read_words(exe, pc, nwords)
        if c.layout is None and land != pc + 4 * nwords:
            raise RuntimeError(f"{name} case {i} ({c.kind}): fell through to {land:#x}")
        if c.layout is not None and land not in (pc + 4 * nwords, tgt):
            raise RuntimeError(f"{name} case {i} ({c.kind}): landed at {land:#x}")
        asm = "; ".join(c.lines).replace("{T}", str(sext(tgt - pc, 64)))
        mem_addr = self_addr + OFF_MEM
        mem_b: list[dict[str, str]] = []
        mem_a: list[dict[str, str]] = []
        if c.mem is not None:
            mem_b = [{"addr": hx(mem_addr), "hex": c.mem.hex()}]
            mem_a = [{"addr": hx(mem_addr), "hex": mem_after.hex()}]
        records.append({
            "kind": c.kind,
            "asm": asm,
            "words": [f"0x{w:08x}" for w in words],
            "pc": hx(pc),
            "before": {
                "regs": {f"r{n}": hx(before[n - 1]) for n in range(1, 32)},
                "fcc": fcc_in[i],
                "mem": mem_b,
            },
            "after": {
                "regs": {f"r{n}": hx(after[n - 1]) for n in range(1, 32)},
                "fcc": fcc_after,
                "pc": hx(land),
                "mem": mem_a,
            },
        })
    return records


def tool_versions() -> tuple[str, str]:
    q = subprocess.run([QEMU, "--version"], capture_output=True, text=True, check=True)
    z = subprocess.run([sys.executable, "-m", "ziglang", "version"], capture_output=True,
                       text=True, check=True)
    return q.stdout.splitlines()[0].strip(), z.stdout.strip()


def build_cases(seed: int) -> Iterator[tuple[str, list[Case]]]:
    for name, fn in GROUPS.items():
        g = Gen(random.Random(f"{seed}:{name}"))
        fn(g)
        yield name, g.cases


def generate(out_dir: Path, seed: int, keep: Path | None) -> None:
    if shutil.which(QEMU) is None:
        raise SystemExit(f"{QEMU} not found: apt-get install qemu-user-static")
    qemu_v, zig_v = tool_versions()
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, dict[str, object]] = {}
    kinds: set[str] = set()
    with tempfile.TemporaryDirectory() as tmp:
        work = keep if keep is not None else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for name, cases in build_cases(seed):
            rng = random.Random(f"{seed}:{name}:fill")
            records = run_group(name, cases, rng, work)
            lines = "".join(json.dumps(rec, separators=(",", ":")) + "\n" for rec in records)
            path = out_dir / f"{name}.jsonl"
            path.write_text(lines)
            kinds.update(str(rec["kind"]) for rec in records)
            files[path.name] = {
                "sha256": hashlib.sha256(lines.encode()).hexdigest(),
                "records": len(records),
                "kinds": len({rec["kind"] for rec in records}),
            }
            print(f"{name}: {len(records)} records", file=sys.stderr)
    manifest = {
        "generator": "tools/gen_loongarch_vectors.py",
        "command": "python tools/gen_loongarch_vectors.py",
        "seed": seed,
        "qemu": qemu_v,
        "ziglang": zig_v,
        "zig_target": ZIG_TARGET,
        "files": files,
        "records": sum(int(str(f["records"])) for f in files.values()),
        "distinct_kinds": len(kinds),
        "kinds": sorted(kinds),
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--out", type=Path, default=OUT_DIR)
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--keep", type=Path, help="keep the generated .S and executables here")
    args = ap.parse_args(argv)
    generate(args.out, args.seed, args.keep)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
