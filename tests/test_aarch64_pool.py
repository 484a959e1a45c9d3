"""Checks for the committed aarch64 instruction pool (tests/vectors/aarch64/pool.jsonl).

The pool is produced by ``tools/gen_aarch64_pool.py``.  These tests re-verify it independently
of the generator: the manifest hash and counts, the capstone decoding of every record, the
kprobe_ref decoder verdicts (never a rejection), the PC-relative field metadata, and one
execution of every straight-line record in unicorn in the snippet environment (x19 = start
and x20 = middle of a 4096-byte data buffer, x21 the writeback register, sp inside a mapped
stack, everything else random).
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
import unicorn.arm64_const as ua

from kprobe_ref.arch import ARCHES, Verdict

# unicorn's bindings are only partially annotated; treat the module as dynamically typed.
unicorn: Any = _unicorn

VECTORS = Path(__file__).resolve().parent / "vectors" / "aarch64"
POOL = VECTORS / "pool.jsonl"
MANIFEST = VECTORS / "pool.manifest.json"

FIELDS = ("hex", "asm", "len", "class", "insns", "parts", "rel_kind", "rel_part", "rel_from",
          "cc", "verdict", "decoder_class")
BRANCH_CLASSES = frozenset({
    "b_branch", "bl_branch", "bcond_branch", "cbz_branch", "tbz_branch", "br_branch",
    "blr_branch", "ret_branch",
})  # fmt: skip
REL_FIELDS = {"imm26": (0, 26), "imm19": (5, 19), "imm14": (5, 14)}
UC_X = {f"x{i}": getattr(ua, f"UC_ARM64_REG_X{i}") for i in range(31)}
UC_Q = tuple(getattr(ua, f"UC_ARM64_REG_Q{i}") for i in range(32))
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
    """Return a detail-enabled aarch64 capstone instance."""
    md = capstone.Cs(capstone.CS_ARCH_ARM64, capstone.CS_MODE_ARM)
    md.detail = True
    return md


def decode_exact(md: Any, code: bytes, addr: int = 0) -> Any:
    """Decode ``code`` as exactly one instruction or fail the test."""
    insns = list(md.disasm(code, addr))
    assert len(insns) == 1, f"{code.hex()}: {len(insns)} instructions"
    assert insns[0].size == len(code) == 4, f"{code.hex()}: decodes to {insns[0].size} bytes"
    return insns[0]


def patch_rel(word: int, kind: str, offset: int, pc: int) -> int:
    """Set the PC-relative field of ``word`` so it addresses ``pc + offset``."""
    if kind in REL_FIELDS:
        lo, width = REL_FIELDS[kind]
        assert offset % 4 == 0 and -(1 << (width + 1)) <= offset < 1 << (width + 1)
        mask = ((1 << width) - 1) << lo
        return (word & ~mask) | (((offset >> 2) << lo) & mask)
    value = offset if kind == "adr" else ((pc + offset) >> 12) - (pc >> 12)
    assert -(1 << 20) <= value < 1 << 20
    return (word & ~((3 << 29) | (0x7FFFF << 5))) | ((value & 3) << 29) | (
        ((value >> 2) & 0x7FFFF) << 5)


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
    assert "gen_aarch64_pool.py" in m["command"]


def test_record_shape() -> None:
    """Every record carries the documented fields with consistent values."""
    seen: set[str] = set()
    for r in records():
        for f in FIELDS:
            assert f in r, (r["asm"], f)
        code = bytes.fromhex(r["hex"])
        assert len(code) == r["len"] == 4 * r["insns"]
        assert "".join(r["parts"]) == r["hex"]
        assert 1 <= r["insns"] <= 4
        assert r["insns"] == 1 or r["class"] in ("stack", "pcrel_load", "br_branch",
                                                 "blr_branch", "ret_branch")
        assert len(r["verdict"]) == len(r["decoder_class"]) == r["insns"]
        assert r["hex"] not in seen, f"duplicate {r['asm']}"
        seen.add(r["hex"])


def test_capstone_decodes_every_record() -> None:
    """Each part decodes to exactly its 4 bytes, with the mnemonic the record names."""
    md = make_cs()
    for r in records():
        texts = [t.split()[0] for t in r["asm"].split("; ")]
        for part, mnemonic in zip(r["parts"], texts, strict=True):
            assert decode_exact(md, bytes.fromhex(part)).mnemonic == mnemonic


def test_decoder_verdicts() -> None:
    """kprobe_ref never rejects a pool record, and the recorded verdicts are current."""
    arch = ARCHES["aarch64"]
    base = manifest()["environment"]["code_base"]
    for r in records():
        for i, part in enumerate(r["parts"]):
            d = arch.decode(bytes.fromhex(part), base + 4 * i, False)
            assert d.verdict != Verdict.REJECT, r["asm"]
            assert d.verdict.value == r["verdict"][i], r["asm"]
            assert d.klass == r["decoder_class"][i], r["asm"]
    simulated = {c for r in records() for c, v in zip(r["decoder_class"], r["verdict"],
                                                        strict=True) if v == "simulate"}
    assert {"adr", "adrp", "ldr_lit_w", "ldr_lit_x", "ldrsw_lit", "ldr_lit_s", "ldr_lit_d",
            "ldr_lit_q", "prfm_lit", "b", "bl", "b_cond", "cbz", "cbnz", "tbz", "tbnz", "br",
            "blr", "ret", "nop"} <= simulated


def test_rel_fields() -> None:
    """PC-relative fields are zero in the pool and move the target when patched."""
    md = make_cs()
    conds: set[int] = set()
    for r in records():
        if r["class"] == "bcond_branch":
            conds.add(r["cc"])
        if r["class"] in BRANCH_CLASSES:
            assert r["rel_kind"] is not None, r["asm"]
        if r["rel_kind"] is None:
            continue
        part = r["rel_part"]
        word = int.from_bytes(bytes.fromhex(r["parts"][part]), "little")
        pc = 0x10_0000 + 4 * r["rel_from"]
        for off in (4, 12, 0x400, -16):
            patched = patch_rel(word, r["rel_kind"], off, pc)
            insn = decode_exact(md, patched.to_bytes(4, "little"), pc)
            want = pc + off if r["rel_kind"] != "adrp" else (pc + off) & ~0xFFF
            imms = [op.imm for op in insn.operands if op.type == capstone.arm64.ARM64_OP_IMM]
            assert want in imms, (r["asm"], off, insn.op_str)
        assert patch_rel(word, r["rel_kind"], 0, pc) == word, "field not zero"
    assert conds == set(range(16))


def run_record(rec: dict[str, Any], env: dict[str, Any], seed: int) -> list[str]:
    """Execute one straight-line record once; return a list of problems (empty if fine)."""
    rng = random.Random(seed)
    code_base, data, size = env["code_base"], env["data_base"], env["data_size"]
    sp = env["sp"]
    uc = unicorn.Uc(unicorn.UC_ARCH_ARM64, unicorn.UC_MODE_ARM)
    uc.ctl_set_cpu_model(ua.UC_CPU_ARM64_MAX)
    uc.reg_write(ua.UC_ARM64_REG_CPACR_EL1, uc.reg_read(ua.UC_ARM64_REG_CPACR_EL1) | 3 << 20)
    uc.mem_map(code_base, 0x1000, unicorn.UC_PROT_READ | unicorn.UC_PROT_EXEC)
    uc.mem_map(data, size, unicorn.UC_PROT_READ | unicorn.UC_PROT_WRITE)
    uc.mem_map(env["stack_base"], env["stack_size"],
               unicorn.UC_PROT_READ | unicorn.UC_PROT_WRITE)
    uc.mem_write(data, rng.randbytes(size))
    for reg in UC_X.values():
        uc.reg_write(reg, rng.getrandbits(64))
    fixed = {**env["base_registers"], "x21": data + 0x800}
    for name, value in fixed.items():
        uc.reg_write(UC_X[name], value)
    uc.reg_write(ua.UC_ARM64_REG_SP, sp)
    for reg in UC_Q:
        uc.reg_write(reg, rng.getrandbits(128))
    uc.reg_write(ua.UC_ARM64_REG_NZCV, rng.getrandbits(4) << 28)

    parts = [bytes.fromhex(p) for p in rec["parts"]]
    if rec["rel_kind"] is not None:
        target = data if rec["rel_kind"] == "adrp" else data + 16 * rng.randrange(200)
        pc = code_base + 4 * rec["rel_from"]
        word = int.from_bytes(parts[rec["rel_part"]], "little")
        parts[rec["rel_part"]] = patch_rel(word, rec["rel_kind"], target - pc,
                                           pc).to_bytes(4, "little")
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
    if uc.reg_read(ua.UC_ARM64_REG_PC) != end:
        bad.append("did not reach the end")
    if uc.reg_read(ua.UC_ARM64_REG_SP) != sp:
        bad.append("sp changed")
    for name, value in fixed.items():
        moved = uc.reg_read(UC_X[name]) - value
        if moved and not (name == "x21" and rec["class"] == "mem_wb" and abs(moved) <= 0x40):
            bad.append(f"{name} changed")
    return bad


def test_straight_line_records_execute() -> None:
    """Every straight-line record runs in unicorn without faulting or moving x19/x20/sp."""
    env = manifest()["environment"]
    recs = [r for r in records() if r["class"] not in BRANCH_CLASSES]
    assert len(recs) >= 300
    failures: list[str] = []
    for i, rec in enumerate(recs):
        for run in range(2):
            problems = run_record(rec, env, seed=0xA64 + 31 * i + run)
            failures.extend(f"{rec['asm']} [{rec['hex']}]: {p}" for p in problems)
    assert not failures, "\n".join(failures[:20])


@pytest.mark.parametrize("cls", ["alu", "flags", "bitfield", "csel", "mul", "mem", "mem_wb",
                                 "atomic", "fp", "simd", "fp_mem", "stack", "pcrel",
                                 "literal", "pcrel_load", *sorted(BRANCH_CLASSES)])
def test_class_present(cls: str) -> None:
    """The pool covers the main instruction families."""
    assert any(r["class"] == cls for r in records())
