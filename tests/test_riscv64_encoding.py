"""riscv64 encoders and field extractors: round trips over the whole immediate range of
every format, range checks, and capstone's reading of what the encoders produce."""

from __future__ import annotations

from typing import Any

import capstone
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kprobe_ref.arch.riscv64 import encoding as E
from kprobe_ref.bits import to_signed

MD: Any = capstone.Cs(capstone.CS_ARCH_RISCV, capstone.CS_MODE_RISCV64 | capstone.CS_MODE_RISCVC)
MD.detail = True
REG = st.integers(0, 31)


def w(raw: bytes) -> int:
    return int.from_bytes(raw, "little")


def cs_imm(raw: bytes) -> tuple[str, int]:
    ins = next(MD.disasm(raw, 0x1000, count=1))
    assert ins.size == len(raw)
    imms = [op.imm for op in ins.operands if op.type == capstone.CS_OP_IMM]
    return ins.insn_name(), imms[-1]


def even(width: int) -> st.SearchStrategy[int]:
    return st.integers(-(1 << (width - 2)), (1 << (width - 2)) - 1).map(lambda x: 2 * x)


@given(REG, even(E.J_WIDTH))
def test_jal_round_trip(rd: int, off: int) -> None:
    raw = E.encode_jal(rd, off)
    assert (E.rd(w(raw)), to_signed(E.imm_j(w(raw)), E.J_WIDTH)) == (rd, off)
    assert cs_imm(raw) == ("jal", off)


@given(st.integers(0, 7).filter(lambda f: f not in (2, 3)), REG, REG, even(E.B_WIDTH))
def test_branch_round_trip(f3: int, a: int, b: int, off: int) -> None:
    raw = E.encode_branch(f3, a, b, off)
    x = w(raw)
    assert (E.funct3(x), E.rs1(x), E.rs2(x)) == (f3, a, b)
    assert to_signed(E.imm_b(x), E.B_WIDTH) == off
    assert cs_imm(raw)[1] == off


@given(REG, REG, st.integers(-2048, 2047))
def test_jalr_round_trip(rd: int, rs1: int, imm: int) -> None:
    x = w(E.encode_jalr(rd, rs1, imm))
    assert (E.rd(x), E.rs1(x), to_signed(E.imm_i(x), 12), E.opcode(x)) == (rd, rs1, imm, 0x67)


@given(REG, st.integers(0, (1 << 20) - 1))
def test_auipc_round_trip(rd: int, imm20: int) -> None:
    x = w(E.encode_auipc(rd, imm20))
    assert (E.rd(x), E.imm_u(x)) == (rd, imm20 << 12)


@given(even(E.CJ_WIDTH))
def test_c_j_round_trip(off: int) -> None:
    raw = E.encode_c_j(off)
    assert to_signed(E.c_imm_j(w(raw)), E.CJ_WIDTH) == off
    assert cs_imm(raw) == ("c.j", off)


@given(st.integers(8, 15), even(E.CB_WIDTH), st.booleans())
def test_c_beqz_c_bnez_round_trip(rs: int, off: int, nez: bool) -> None:
    raw = (E.encode_c_bnez if nez else E.encode_c_beqz)(rs, off)
    assert (E.c_rs1_prime(w(raw)), to_signed(E.c_imm_b(w(raw)), E.CB_WIDTH)) == (rs, off)
    assert cs_imm(raw) == ("c.bnez" if nez else "c.beqz", off)


@given(st.integers(1, 31))
def test_c_jr_c_jalr_fields(rs: int) -> None:
    for raw in (E.encode_c_jr(rs), E.encode_c_jalr(rs)):
        assert (E.c_rs1(w(raw)), E.c_rs2(w(raw)), E.length(raw)) == (rs, 0, 2)


def test_store_and_ci_immediates() -> None:
    sd = 0xFE11_3C23  # sd ra, -8(sp)
    assert to_signed(E.imm_s(sd), E.S_WIDTH) == -8
    c_addi = 0x1141  # c.addi sp, -16
    assert to_signed(E.c_imm_i(c_addi), E.CI_WIDTH) == -16


@pytest.mark.parametrize(("enc", "args"), [
    (E.encode_jal, (1, 1 << 20)), (E.encode_jal, (1, 3)), (E.encode_branch, (0, 1, 2, 4096)),
    (E.encode_c_j, (2048,)), (E.encode_c_beqz, (8, 256)), (E.encode_c_beqz, (7, 0)),
    (E.encode_c_jr, (0,)), (E.encode_c_jalr, (0,)), (E.encode_auipc, (1, 1 << 20)),
    (E.encode_jalr, (1, 32, 0)),
])  # fmt: skip
def test_encoders_refuse_what_does_not_fit(enc: Any, args: tuple[int, ...]) -> None:
    with pytest.raises(ValueError):
        enc(*args)


def test_length() -> None:
    assert E.length(b"\x01\x00") == 2
    assert E.length(b"\x13\x00\x00\x00") == 4
    assert E.length(b"\x13\x00") == 0  # truncated
    assert E.length(b"\x1f\x00\x00\x00\x00\x00") == 0  # 48-bit
    assert E.length(b"") == 0
