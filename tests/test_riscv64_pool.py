"""Checks for the committed riscv64 instruction pool (tests/vectors/riscv64/pool.jsonl).

The pool is produced by ``tools/gen_riscv64_pool.py``.  These tests re-verify it independently
of the generator: the manifest hash and counts, the capstone decoding of every record
(RV64GC with compressed forms: each part decodes to exactly its 2 or 4 bytes), the
kprobe_ref decoder verdicts (never a rejection), the PC-relative field metadata, and one
execution of every straight-line record in unicorn in the snippet environment (s0/s2 =
start and s1/s3 = middle of a 4096-byte data buffer, sp inside a mapped stack, everything
else random).
"""

from __future__ import annotations

import hashlib
import json
import random
from functools import cache
from pathlib import Path
from typing import Any

import capstone
import pytest
import unicorn as _unicorn
import unicorn.riscv_const as ur

from kprobe_ref.arch import ARCHES, Verdict

# unicorn's bindings are only partially annotated; treat the module as dynamically typed.
unicorn: Any = _unicorn

VECTORS = Path(__file__).resolve().parent / "vectors" / "riscv64"
POOL = VECTORS / "pool.jsonl"
MANIFEST = VECTORS / "pool.manifest.json"

FIELDS = ("hex", "asm", "len", "class", "insns", "parts", "rel_kind", "rel_part", "rel_from",
          "verdict", "decoder_class")
BRANCH_CLASSES = frozenset({"bcc_branch", "jal_branch", "cj_branch", "cb_branch",
                            "jalr_branch", "cjr_branch"})
ABI = ("zero", "ra", "sp", "gp", "tp", "t0", "t1", "t2", "s0", "s1", "a0", "a1", "a2", "a3",
       "a4", "a5", "a6", "a7", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11",
       "t3", "t4", "t5", "t6")  # fmt: skip
UC_X = {name: getattr(ur, f"UC_RISCV_REG_X{i}") for i, name in enumerate(ABI) if i}
UC_F = tuple(getattr(ur, f"UC_RISCV_REG_F{i}") for i in range(32))
STACK_SCRATCH = 512


@cache
def manifest() -> dict[str, Any]:
    """Return the parsed manifest."""
    data: dict[str, Any] = json.loads(MANIFEST.read_text())
    return data


@cache
def records() -> tuple[dict[str, Any], ...]:
    """Return every pool record in file order."""
    return tuple(json.loads(line) for line in POOL.read_text().splitlines())


def make_cs() -> Any:
    """Return a detail-enabled RV64GC capstone instance."""
    md = capstone.Cs(capstone.CS_ARCH_RISCV, capstone.CS_MODE_RISCV64 | capstone.CS_MODE_RISCVC)
    md.detail = True
    return md


def decode_exact(md: Any, code: bytes) -> Any:
    """Decode ``code`` as exactly one instruction or fail the test."""
    insns = list(md.disasm(code, 0))
    assert len(insns) == 1, f"{code.hex()}: {len(insns)} instructions"
    assert insns[0].size == len(code), f"{code.hex()}: decodes to {insns[0].size} bytes"
    return insns[0]


def _b(v: int, hi: int, lo: int) -> int:
    return (v >> lo) & ((1 << (hi - lo + 1)) - 1)


def patch_rel(parts: list[bytes], kind: str, part: int, off: int) -> list[bytes]:
    """Set the PC-relative field of ``kind`` in ``parts[part]`` (and the low part) to
    ``off`` bytes."""
    out = list(parts)
    w = int.from_bytes(out[part], "little")
    if kind == "b":
        w = (w & ~0xFE000F80) | (_b(off, 12, 12) << 31 | _b(off, 10, 5) << 25
                                 | _b(off, 4, 1) << 8 | _b(off, 11, 11) << 7)
    elif kind == "j":
        w = (w & 0xFFF) | (_b(off, 20, 20) << 31 | _b(off, 10, 1) << 21
                           | _b(off, 11, 11) << 20 | _b(off, 19, 12) << 12)
    elif kind == "cj":
        w = (w & ~0x1FFC) | (_b(off, 11, 11) << 12 | _b(off, 4, 4) << 11 | _b(off, 9, 8) << 9
                             | _b(off, 10, 10) << 8 | _b(off, 6, 6) << 7 | _b(off, 7, 7) << 6
                             | _b(off, 3, 1) << 3 | _b(off, 5, 5) << 2)
    elif kind == "cb":
        w = (w & ~0x1C7C) | (_b(off, 8, 8) << 12 | _b(off, 4, 3) << 10 | _b(off, 7, 6) << 5
                             | _b(off, 2, 1) << 3 | _b(off, 5, 5) << 2)
    else:
        hi = (off + 0x800) >> 12
        lo = off - (hi << 12)
        w = (w & 0xFFF) | ((hi & 0xFFFFF) << 12)
        lw = int.from_bytes(out[part + 1], "little")
        if kind == "hi20_lo12i":
            lw = (lw & 0xFFFFF) | ((lo & 0xFFF) << 20)
        else:
            lw = (lw & 0x01FFF07F) | (_b(lo, 11, 5) << 25) | (_b(lo, 4, 0) << 7)
        out[part + 1] = lw.to_bytes(4, "little")
    out[part] = w.to_bytes(len(out[part]), "little")
    return out


def test_manifest_hash_and_counts() -> None:
    """The manifest pins the exact pool bytes and its per-class counts."""
    m = manifest()
    assert hashlib.sha256(POOL.read_bytes()).hexdigest() == m["pool_sha256"]
    counts: dict[str, int] = {}
    for r in records():
        counts[r["class"]] = counts.get(r["class"], 0) + 1
    assert counts == m["class_counts"]
    assert len(records()) == m["record_count"]
    assert set(m["branch_classes"]) == BRANCH_CLASSES
    for key in ("ziglang", "capstone", "unicorn"):
        assert m["versions"][key]
    assert "gen_riscv64_pool.py" in m["command"]


def test_record_shape() -> None:
    """Every record carries the documented fields with consistent values."""
    seen: set[str] = set()
    for r in records():
        for f in FIELDS:
            assert f in r, (r["asm"], f)
        code = bytes.fromhex(r["hex"])
        assert len(code) == r["len"]
        assert "".join(r["parts"]) == r["hex"]
        assert r["insns"] == len(r["parts"]) == len(r["verdict"]) == len(r["decoder_class"])
        assert all(len(p) in (4, 8) for p in r["parts"])
        assert r["hex"] not in seen, f"duplicate {r['asm']}"
        seen.add(r["hex"])
    assert sum(1 for r in records() for p in r["parts"] if len(p) == 4) >= 40


def test_capstone_decodes_every_record() -> None:
    """Each part decodes to exactly its 2 or 4 bytes with the mnemonic the record names;
    compressed parts are exactly the ``c.*`` mnemonics."""
    md = make_cs()
    for r in records():
        texts = [t.split()[0] for t in r["asm"].split("; ")]
        for part, mnemonic in zip(r["parts"], texts, strict=True):
            insn = decode_exact(md, bytes.fromhex(part))
            assert insn.mnemonic == mnemonic
            assert (insn.size == 2) == mnemonic.startswith("c."), r["asm"]
        assert sum(i.size for i in md.disasm(bytes.fromhex(r["hex"]), 0)) == r["len"]


def test_decoder_verdicts() -> None:
    """kprobe_ref never rejects a pool record, and the recorded verdicts are current."""
    arch = ARCHES["riscv64"]
    at = manifest()["environment"]["code_base"]
    for r in records():
        for i, part in enumerate(r["parts"]):
            d = arch.decode(bytes.fromhex(part), at, False)
            assert d.verdict != Verdict.REJECT, r["asm"]
            assert d.verdict.value == r["verdict"][i], r["asm"]
            assert d.klass == r["decoder_class"][i], r["asm"]
    simulated = {c for r in records() for c, v in zip(r["decoder_class"], r["verdict"],
                                                        strict=True) if v == "simulate"}
    assert {"auipc", "jal", "jalr", "beq", "bne", "blt", "bge", "bltu", "bgeu", "c_j",
            "c_beqz", "c_bnez", "c_jr", "c_jalr"} <= simulated
    assert any(c == "plain" and r["class"] == "atomic" for r in records()
               for c in r["decoder_class"])


def test_rel_fields() -> None:
    """PC-relative fields are zero in the pool and move the target when patched."""
    md = make_cs()
    for r in records():
        if r["class"] in BRANCH_CLASSES:
            assert r["rel_kind"] is not None, r["asm"]
        if r["rel_kind"] is None:
            continue
        parts = [bytes.fromhex(p) for p in r["parts"]]
        kind, part = r["rel_kind"], r["rel_part"]
        assert patch_rel(parts, kind, part, 0) == parts, "field not zero"
        for off in (2, 6, 0x40, 0xFE, -0x100):
            patched = patch_rel(parts, kind, part, off)
            insn = decode_exact(md, patched[part])
            imms = [op.imm for op in insn.operands if op.type == capstone.riscv.RISCV_OP_IMM]
            if kind.startswith("hi20"):
                low = decode_exact(md, patched[part + 1])
                lows = [op.imm for op in low.operands if op.type == capstone.riscv.RISCV_OP_IMM]
                lows += [op.mem.disp for op in low.operands
                         if op.type == capstone.riscv.RISCV_OP_MEM]
                assert (imms[0] << 12) + lows[0] in (off, off + (1 << 32)), r["asm"]
            else:
                assert off in imms, (r["asm"], off, insn.op_str)


def run_record(rec: dict[str, Any], env: dict[str, Any], seed: int) -> list[str]:
    """Execute one straight-line record once; return a list of problems (empty if fine)."""
    rng = random.Random(seed)
    code_base, data, size, sp = env["code_base"], env["data_base"], env["data_size"], env["sp"]
    uc = unicorn.Uc(unicorn.UC_ARCH_RISCV, unicorn.UC_MODE_RISCV64)
    uc.reg_write(ur.UC_RISCV_REG_MSTATUS, uc.reg_read(ur.UC_RISCV_REG_MSTATUS) | 3 << 13)
    uc.mem_map(code_base, 0x1000, unicorn.UC_PROT_READ | unicorn.UC_PROT_EXEC)
    uc.mem_map(data, size, unicorn.UC_PROT_READ | unicorn.UC_PROT_WRITE)
    uc.mem_map(env["stack_base"], env["stack_size"],
               unicorn.UC_PROT_READ | unicorn.UC_PROT_WRITE)
    uc.mem_write(data, rng.randbytes(size))
    for reg in UC_X.values():
        uc.reg_write(reg, rng.getrandbits(64))
    fixed = {**env["base_registers"], "sp": sp}
    for name, value in fixed.items():
        uc.reg_write(UC_X[name], value)
    for reg in UC_F:
        uc.reg_write(reg, rng.getrandbits(64))

    parts = [bytes.fromhex(p) for p in rec["parts"]]
    if rec["rel_kind"] is not None:
        target = data + 16 * rng.randrange(200)
        pc = code_base + sum(len(p) for p in parts[: rec["rel_from"]])
        parts = patch_rel(parts, rec["rel_kind"], rec["rel_part"], target - pc)
    code = b"".join(parts)
    uc.mem_write(code_base, code)
    bad: list[str] = []

    def on_mem(_uc: Any, access: int, address: int, n: int, _v: int, _u: Any) -> None:
        in_data = data <= address and address + n <= data + size
        in_stack = rec["class"] == "stack" and sp - STACK_SCRATCH <= address < address + n <= sp
        if not (in_data or in_stack):
            bad.append(f"access {access} at {address:#x}+{n}")

    uc.hook_add(unicorn.UC_HOOK_MEM_READ | unicorn.UC_HOOK_MEM_WRITE, on_mem)
    end = code_base + len(code)
    try:
        uc.emu_start(code_base, end, count=rec["insns"])
    except unicorn.UcError as exc:
        return [f"unicorn: {exc}"]
    if uc.reg_read(ur.UC_RISCV_REG_PC) != end:
        bad.append("did not reach the end")
    bad.extend(f"{name} changed" for name, value in fixed.items()
               if uc.reg_read(UC_X[name]) != value)
    return bad


def test_straight_line_records_execute() -> None:
    """Every straight-line record runs in unicorn without faulting or moving s0-s3/sp."""
    env = manifest()["environment"]
    recs = [r for r in records() if r["class"] not in BRANCH_CLASSES]
    assert len(recs) >= 150
    failures: list[str] = []
    for i, rec in enumerate(recs):
        for run in range(2):
            problems = run_record(rec, env, seed=0x5C + 31 * i + run)
            failures.extend(f"{rec['asm']} [{rec['hex']}]: {p}" for p in problems)
    assert not failures, "\n".join(failures[:20])


@pytest.mark.parametrize("cls", ["alu", "mul", "mem", "atomic", "fp", "fp_mem", "compressed",
                                 "compressed_mem", "stack", "pcrel", "pcrel_load",
                                 *sorted(BRANCH_CLASSES)])
def test_class_present(cls: str) -> None:
    """The pool covers the main instruction families."""
    assert any(r["class"] == cls for r in records())
