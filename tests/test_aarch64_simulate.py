"""aarch64 simulation rules on a concrete state, checked against unicorn executing the same
word (every simulated class but BC.cond, which unicorn lacks and is checked against B.cond),
at the edges of every immediate range and with aliased registers."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import pytest
import unicorn as _unicorn
from unicorn import arm64_const as a64

from kprobe_ref.arch.aarch64 import OPS
from kprobe_ref.arch.aarch64 import encoding as enc
from kprobe_ref.arch.aarch64.decode import decode
from kprobe_ref.arch.aarch64.regs import Aarch64PtRegs
from kprobe_ref.arch.aarch64.rethook import rethook_prepare, rethook_return, return_frame
from kprobe_ref.arch.aarch64.simulate import condition, simulate
from kprobe_ref.arch.base import Verdict

unicorn: Any = _unicorn
M64 = (1 << 64) - 1
GPRS = [f"x{i}" for i in range(31)]


@dataclass
class FakeState:
    """A dictionary-backed SimState."""

    address: int
    regs: dict[str, int] = field(default_factory=dict)
    mem: dict[int, int] = field(default_factory=dict)
    extras: dict[str, int] = field(default_factory=dict)
    pc: int | None = None

    def reg(self, name: str) -> int:
        return 0 if name == "xzr" else self.regs.get(name, 0)

    def set_reg(self, name: str, value: Any) -> None:
        if name != "xzr":
            self.regs[name] = int(value) & M64

    def set_pc(self, value: Any) -> None:
        self.pc = int(value) & M64

    def load(self, addr: Any, size: int) -> int:
        return int.from_bytes(bytes(self.mem[(int(addr) + i) & M64] for i in range(size)), "little")

    def store(self, addr: Any, size: int, value: Any) -> None:
        for i, b in enumerate((int(value) & ((1 << (8 * size)) - 1)).to_bytes(size, "little")):
            self.mem[(int(addr) + i) & M64] = b

    def extra(self, name: str) -> int:
        return self.extras.get(name, 0)

    def set_extra(self, name: str, value: Any) -> None:
        self.extras[name] = int(value)


def sim(
    word: int,
    addr: int,
    regs: dict[str, int],
    mem: dict[int, int] | None = None,
) -> FakeState:
    d = decode(enc.to_bytes(word), addr)
    assert d.verdict is Verdict.SIMULATE, d
    s = FakeState(addr, dict(regs), dict(mem or {}))
    simulate(d, s)
    return s


def run_unicorn(
    word: int, addr: int, regs: dict[str, int], data: tuple[int, bytes] | None = None
) -> tuple[dict[str, int], int, dict[str, int]]:
    """Execute one word at ``addr``; returns (x0..x30, pc, q0..q31)."""
    uc = unicorn.Uc(unicorn.UC_ARCH_ARM64, unicorn.UC_MODE_ARM)
    uc.ctl_set_cpu_model(a64.UC_CPU_ARM64_MAX)
    uc.reg_write(a64.UC_ARM64_REG_CPACR_EL1, uc.reg_read(a64.UC_ARM64_REG_CPACR_EL1) | 3 << 20)
    page = addr & ~0xFFF
    uc.mem_map(page, 0x1000)
    uc.mem_write(addr, enc.to_bytes(word))
    if data is not None:
        for dpage in {data[0] & ~0xFFF, (data[0] + len(data[1]) - 1) & ~0xFFF} - {page}:
            uc.mem_map(dpage, 0x1000)
        uc.mem_write(data[0], data[1])
    for name, value in regs.items():
        uc.reg_write(
            a64.UC_ARM64_REG_NZCV
            if name == "pstate"
            else getattr(a64, f"UC_ARM64_REG_{name.upper()}"),
            value,
        )
    try:
        uc.emu_start(addr, 0, count=1)
    except unicorn.UcError as err:
        assert err.errno == unicorn.UC_ERR_FETCH_UNMAPPED
    out = {n: uc.reg_read(getattr(a64, f"UC_ARM64_REG_{n.upper()}")) for n in GPRS}
    q = {f"q{i}": uc.reg_read(getattr(a64, f"UC_ARM64_REG_Q{i}")) for i in range(32)}
    return out, uc.reg_read(a64.UC_ARM64_REG_PC), q


def check(
    word: int, addr: int, regs: dict[str, int], data: tuple[int, bytes] | None = None
) -> FakeState:
    """Simulate ``word`` and execute it in unicorn; registers, PC and V registers agree."""
    mem = {data[0] + i: b for i, b in enumerate(data[1])} if data else {}
    s = sim(word, addr, regs, mem)
    u_regs, u_pc, u_q = run_unicorn(word, addr, regs, data)
    expected = {n: regs.get(n, 0) for n in GPRS} | {n: v for n, v in s.regs.items() if n in GPRS}
    assert u_regs == expected
    assert u_pc == s.pc
    for name, value in s.extras.items():
        assert u_q[name] == value
    return s


def rand_regs(rng: random.Random) -> dict[str, int]:
    return {n: rng.getrandbits(64) for n in GPRS}


ADDR = 0x4000_0000


# -- B, BL -------------------------------------------------------------------------------------


@pytest.mark.parametrize("offset", [0, 4, -4, (1 << 27) - 4, -(1 << 27)])
def test_b_and_bl_at_range_edges(offset: int) -> None:
    rng = random.Random(offset)
    assert (
        check(enc.encode_b(offset), ADDR + (1 << 27), rand_regs(rng)).pc
        == ADDR + (1 << 27) + offset
    )
    s = check(enc.encode_bl(offset), ADDR + (1 << 27), rand_regs(rng))
    assert s.regs["x30"] == ADDR + (1 << 27) + 4


def test_b_wraps_at_top_of_address_space() -> None:
    top = 0xFFFF_FFFF_FFFF_F000
    assert sim(enc.encode_b(0x2000), top, {}).pc == 0x1000
    assert sim(enc.encode_b(-(1 << 27)), 0x1000, {}).pc == (0x1000 - (1 << 27)) & M64


# -- B.cond, BC.cond, condition ----------------------------------------------------------------


def reference_condition(cond: int, nzcv: int) -> bool:
    n, z, c, v = (nzcv >> 31) & 1, (nzcv >> 30) & 1, (nzcv >> 29) & 1, (nzcv >> 28) & 1
    table = {
        0: z == 1, 1: z == 0, 2: c == 1, 3: c == 0, 4: n == 1, 5: n == 0, 6: v == 1, 7: v == 0,
        8: c == 1 and z == 0, 9: not (c == 1 and z == 0), 10: n == v, 11: n != v,
        12: z == 0 and n == v, 13: not (z == 0 and n == v), 14: True, 15: True,
    }  # fmt: skip
    return table[cond]


def test_condition_matches_reference_table() -> None:
    for cond in range(16):
        for flags in range(16):
            assert condition(cond, flags << 28) == reference_condition(cond, flags << 28)


@pytest.mark.parametrize("cond", range(16))
def test_b_cond_against_unicorn(cond: int) -> None:
    for flags in range(16):
        for offset in ((1 << 20) - 4, -(1 << 20)):
            check(enc.encode_b_cond(cond, offset), ADDR, {"pstate": flags << 28})


@pytest.mark.parametrize("cond", range(16))
def test_bc_cond_branches_exactly_as_b_cond(cond: int) -> None:
    for flags in range(16):
        for offset in (8, (1 << 20) - 4, -(1 << 20)):
            regs = {"pstate": flags << 28}
            bc = sim(enc.encode_bc_cond(cond, offset), ADDR, regs)
            b = sim(enc.encode_b_cond(cond, offset), ADDR, regs)
            assert bc.pc == b.pc
            assert bc.pc == (ADDR + offset if reference_condition(cond, flags << 28) else ADDR + 4)
            assert bc.regs == regs


# -- CBZ/CBNZ, TBZ/TBNZ ------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, 1, 1 << 32, 1 << 63, M64, 0xFFFF_FFFF])
def test_cbz_cbnz_word_and_doubleword(value: int) -> None:
    for sf in (0, 1):
        for nonzero in (False, True):
            for offset in ((1 << 20) - 4, -(1 << 20), 8):
                check(enc.encode_cbz(5, offset, sf, nonzero), ADDR, {"x5": value})
    assert sim(enc.encode_cbz(5, 8, 0), ADDR, {"x5": 1 << 32}).pc == ADDR + 8


def test_cbz_xzr_always_taken() -> None:
    check(enc.encode_cbz(31, 16), ADDR, {})
    assert sim(enc.encode_cbz(31, 16, nonzero=True), ADDR, {}).pc == ADDR + 4


@pytest.mark.parametrize("bit", [0, 3, 31, 32, 40, 63])
def test_tbz_tbnz_bits_and_range(bit: int) -> None:
    for value in (0, 1 << bit, M64 ^ (1 << bit), M64):
        for nonzero in (False, True):
            for offset in ((1 << 15) - 4, -(1 << 15)):
                check(enc.encode_tbz(7, bit, offset, nonzero), ADDR, {"x7": value})


# -- BR, BLR, RET ------------------------------------------------------------------------------


@pytest.mark.parametrize("rn", [0, 9, 16, 29, 30])
def test_br_blr_ret_any_register(rn: int) -> None:
    rng = random.Random(rn)
    regs = rand_regs(rng) | {f"x{rn}": 0x5555_0000 + 4 * rn}
    for word in (enc.encode_br(rn), enc.encode_blr(rn), enc.encode_ret(rn)):
        check(word, ADDR, regs)


def test_blr_x30_branches_to_old_x30_then_links() -> None:
    s = check(enc.encode_blr(30), ADDR, {"x30": 0x7777_0000})
    assert s.pc == 0x7777_0000
    assert s.regs["x30"] == ADDR + 4


def test_br_and_ret_x30_leave_x30() -> None:
    for word in (enc.encode_br(30), enc.encode_ret(30)):
        s = check(word, ADDR, {"x30": 0x7777_0004})
        assert (s.pc, s.regs["x30"]) == (0x7777_0004, 0x7777_0004)


def test_register_31_is_xzr_for_register_branches() -> None:
    assert sim(enc.encode_br(31), ADDR, {}).pc == 0
    s = sim(enc.encode_blr(31), ADDR, {"x30": 5})
    assert (s.pc, s.regs["x30"]) == (0, ADDR + 4)


# -- ADR, ADRP ---------------------------------------------------------------------------------


@pytest.mark.parametrize("offset", [0, 1, -1, (1 << 20) - 1, -(1 << 20)])
def test_adr_range_edges(offset: int) -> None:
    s = check(enc.encode_adr(3, offset), ADDR + 0x10_0000, {"x3": 99})
    assert s.regs["x3"] == ADDR + 0x10_0000 + offset


@pytest.mark.parametrize(
    "addr", [0x4000_0000, 0x4000_0FFC, 0xFFFF_FFFF_FFFF_FFFC, 0xFFFF_FFFF_FFFF_F000, 0x1000]
)
@pytest.mark.parametrize("pages", [0, 1, -1, (1 << 20) - 1, -(1 << 20)])
def test_adrp_page_edges_and_wrap(addr: int, pages: int) -> None:
    s = check(enc.encode_adrp(4, pages * 4096), addr, {})
    assert s.regs["x4"] == ((addr & ~0xFFF) + pages * 4096) & M64


def test_adr_to_xzr_discards() -> None:
    s = check(enc.encode_adr(31, 8), ADDR, {})
    assert s.regs == {} and s.pc == ADDR + 4


def test_adrp_destination_equal_to_nothing_it_reads() -> None:
    s = check(enc.encode_adrp(30, 4096), ADDR, {"x30": 1})
    assert s.regs["x30"] == ADDR + 4096


# -- literal loads -----------------------------------------------------------------------------

LIT = bytes(range(0x80, 0x90))


@pytest.mark.parametrize("offset", [8, -8, (1 << 20) - 16, -(1 << 20)])
def test_ldr_literal_general_registers(offset: int) -> None:
    target = ADDR + (1 << 20) + offset
    addr = ADDR + (1 << 20)
    for word in (
        enc.encode_ldr_lit(2, offset, 4),
        enc.encode_ldr_lit(2, offset, 8),
        enc.encode_ldrsw_lit(2, offset),
        enc.encode_ldr_lit(31, offset, 8),
    ):
        check(word, addr, {"x2": M64}, (target, LIT[:8]))
    s = sim(enc.encode_ldrsw_lit(2, offset), addr, {}, {target + i: b for i, b in enumerate(LIT)})
    assert s.regs["x2"] == 0xFFFF_FFFF_8382_8180


@pytest.mark.parametrize(("size", "vt"), [(4, 0), (8, 1), (16, 2), (16, 31), (4, 31)])
def test_ldr_literal_simd_zero_extends_to_128(size: int, vt: int) -> None:
    s = check(enc.encode_ldr_lit_simd(vt, 0x40, size), ADDR, {}, (ADDR + 0x40, LIT))
    assert s.extras == {f"q{vt}": int.from_bytes(LIT[:size], "little")}
    assert s.regs == {}


def test_prfm_literal_and_hints_only_advance_pc() -> None:
    for word in (enc.encode_prfm_lit(0, -(1 << 20)), enc.NOP, 0xD503205F, 0xD503207F):
        s = sim(word, ADDR, {"x0": 1})
        assert (s.pc, s.regs, s.mem, s.extras) == (ADDR + 4, {"x0": 1}, {}, {})


# -- slot and rethook --------------------------------------------------------------------------


def test_slot_is_insn_then_brk6() -> None:
    d = decode(enc.to_bytes(0x8B020020), ADDR)
    plan = OPS.build_slot(d, 0x7000_0000, False)
    assert plan.code == enc.to_bytes(0x8B020020) + enc.to_bytes(0xD42000C0)
    assert (plan.break_offset, plan.resume_delta) == (4, 4)


def test_rethook_hijacks_x30_and_restores_it() -> None:
    regs = Aarch64PtRegs(x30=0x1234, sp=0x8000, pc=ADDR)
    s = FakeState(ADDR, {"x30": 0x1234, "sp": 0x8000})
    assert rethook_prepare(s, 0x9000) == (0x1234, 0x8000)
    assert s.regs["x30"] == 0x9000
    regs.pc, regs.regs[30] = 0x9000, 0x9000
    assert return_frame(regs) == 0x8000
    rethook_return(regs, 0x1234)
    assert (regs.pc, regs.get("x30"), regs.get("lr")) == (0x1234, 0x1234, 0x1234)


def test_ptregs_names() -> None:
    regs = Aarch64PtRegs(x0=1, x1=2, fp=3, sp=4, pc=5, pstate=0x6000_0000)
    assert (regs.first_ret_value(), regs.second_ret_value(), regs.get("x29")) == (1, 2, 3)
    assert (regs.sp, regs.pc, regs.arg(7), list(regs.names())[31:]) == (
        4,
        5,
        0,
        ["sp", "pc", "pstate"],
    )
    regs.set("sp", -1)
    assert regs.sp == M64 and regs.copy() == regs
