"""riscv64 simulated classes from concrete encodings: every class taken and not taken,
immediate edges, register aliasing (``jalr ra, 0(ra)``, ``c.jalr ra``, ``c.jr ra``,
rd == rs1), AUIPC wrapping at 2**64.  Each rule is checked three ways: against values
written here from the manual, against unicorn executing the same instruction, and on the
machine probed versus unprobed."""

from __future__ import annotations

import random
from typing import Any

import pytest
import unicorn as _unicorn
from unicorn import riscv_const as rvc

from kprobe_ref.arch import ARCHES, Decoded, Verdict
from kprobe_ref.arch.riscv64 import encoding as E
from kprobe_ref.bits import BV
from tests.helpers import compare_probed

unicorn: Any = _unicorn
RV = ARCHES["riscv64"]
M64 = (1 << 64) - 1
AT = 0x40_2000


class DictState:
    """A plain SimState over a dict of registers ``x1``..``x31`` (x0 reads 0)."""

    def __init__(self, address: int, regs: dict[int, int]) -> None:
        self._address = address
        self.x = {n: regs.get(n, 0) & M64 for n in range(32)}
        self.x[0] = 0
        self.pc: int | None = None
        self.writes: list[str] = []

    @property
    def address(self) -> int:
        return self._address

    def reg(self, name: str) -> int:
        assert not self.writes, f"read {name} after a write: {self.writes}"
        return self.x[int(name[1:])]

    def set_reg(self, name: str, value: BV) -> None:
        assert isinstance(value, int)
        self.writes.append(name)
        if name != "x0":
            self.x[int(name[1:])] = value & M64

    def set_pc(self, value: BV) -> None:
        assert isinstance(value, int)
        self.writes.append("pc")
        self.pc = value & M64

    def load(self, addr: BV, size: int) -> int:
        raise AssertionError("no riscv rule reads memory")

    def store(self, addr: BV, size: int, value: BV) -> None:
        raise AssertionError("no riscv rule writes memory")

    def extra(self, name: str) -> int:
        raise AssertionError(name)

    def set_extra(self, name: str, value: BV) -> None:
        raise AssertionError(name)


def decode(raw: bytes, at: int = AT) -> Decoded:
    d = RV.decode(raw + b"\x13\0\0\0", at, False)
    assert d.verdict is Verdict.SIMULATE, d
    return d


def run_rule(raw: bytes, regs: dict[int, int], at: int = AT) -> DictState:
    s = DictState(at, regs)
    RV.simulate(decode(raw, at), s)
    return s


# -- values from the manual -------------------------------------------------------------------


@pytest.mark.parametrize("offset", [-(1 << 20), -2, 0, 2, (1 << 20) - 2])
def test_jal_edges(offset: int) -> None:
    s = run_rule(E.encode_jal(1, offset), {})
    assert s.pc == (AT + offset) & M64 and s.x[1] == AT + 4


def test_jal_to_x0_links_nothing() -> None:
    s = run_rule(E.encode_jal(0, 64), {1: 77})
    assert s.pc == AT + 64 and s.x[1] == 77 and s.x[0] == 0


def test_jalr_ra_0_ra_jumps_to_old_ra() -> None:
    s = run_rule(E.encode_jalr(1, 1, 0), {1: 0x1234_5679})
    assert s.pc == 0x1234_5678 and s.x[1] == AT + 4


@pytest.mark.parametrize("imm", [-2048, -1, 0, 1, 2047])
def test_jalr_rd_equals_rs1_immediate_edges(imm: int) -> None:
    s = run_rule(E.encode_jalr(5, 5, imm), {5: 0x8000_0000})
    assert s.pc == (0x8000_0000 + imm) & ~1 & M64 and s.x[5] == AT + 4


def test_c_jalr_ra_jumps_to_old_ra_and_links_pc_plus_2() -> None:
    s = run_rule(E.encode_c_jalr(1), {1: 0x5000})
    assert s.pc == 0x5000 and s.x[1] == AT + 2


def test_c_jr_ra_is_a_return_and_keeps_ra() -> None:
    s = run_rule(E.encode_c_jr(1), {1: 0x5001})
    assert s.pc == 0x5000 and s.x[1] == 0x5001 and s.writes == ["pc"]


@pytest.mark.parametrize(("at", "imm20", "expect"), [
    (0xFFFF_FFFF_FFFF_FFF8, 0x01000, 0x0000_0000_00FF_FFF8),
    (0x10, 0xFFFFF, 0xFFFF_FFFF_FFFF_F010),
    (0x0, 0x80000, 0xFFFF_FFFF_8000_0000),
    (0x7FFF_FFFF_FFFF_F000, 0x7FFFF, 0x8000_0000_7FFF_E000),
])  # fmt: skip
def test_auipc_wraps_modulo_2_64(at: int, imm20: int, expect: int) -> None:
    s = run_rule(E.encode_auipc(10, imm20), {}, at)
    assert s.x[10] == expect and s.pc == (at + 4) & M64


BRANCHES = {0: "beq", 1: "bne", 4: "blt", 5: "bge", 6: "bltu", 7: "bgeu"}


def _taken(f3: int, a: int, b: int) -> bool:
    sa, sb = (x - (1 << 64) if x >> 63 else x for x in (a, b))
    return {0: a == b, 1: a != b, 4: sa < sb, 5: sa >= sb, 6: a < b, 7: a >= b}[f3]


VALUES = (0, 1, 2, M64, 1 << 63, (1 << 63) - 1)


@pytest.mark.parametrize("f3", sorted(BRANCHES))
@pytest.mark.parametrize("offset", [-4096, -2, 4094])
def test_branches_taken_and_not_taken(f3: int, offset: int) -> None:
    raw = E.encode_branch(f3, 6, 7, offset)
    assert decode(raw).klass == BRANCHES[f3]
    for a in VALUES:
        for b in VALUES:
            s = run_rule(raw, {6: a, 7: b})
            want = AT + offset if _taken(f3, a, b) else AT + 4
            assert s.pc == want, (BRANCHES[f3], hex(a), hex(b))


def test_branch_on_same_register_and_x0() -> None:
    assert run_rule(E.encode_branch(0, 0, 0, 8), {}).pc == AT + 8  # beq x0, x0
    assert run_rule(E.encode_branch(4, 9, 9, 8), {9: 5}).pc == AT + 4  # blt s1, s1


@pytest.mark.parametrize("offset", [-2048, -2, 2, 2046])
def test_c_j_edges(offset: int) -> None:
    assert run_rule(E.encode_c_j(offset), {}).pc == AT + offset


@pytest.mark.parametrize("offset", [-256, -2, 2, 254])
@pytest.mark.parametrize("value", [0, 1, M64])
def test_c_beqz_c_bnez(offset: int, value: int) -> None:
    for rs in (8, 15):
        beqz = run_rule(E.encode_c_beqz(rs, offset), {rs: value})
        bnez = run_rule(E.encode_c_bnez(rs, offset), {rs: value})
        assert beqz.pc == (AT + offset if value == 0 else AT + 2)
        assert bnez.pc == (AT + offset if value != 0 else AT + 2)


# -- against unicorn executing the instruction ------------------------------------------------

_UC_X = [getattr(rvc, f"UC_RISCV_REG_X{i}") for i in range(32)]


def unicorn_step(raw: bytes, regs: dict[int, int], at: int) -> tuple[int, dict[int, int]]:
    uc: Any = unicorn.Uc(unicorn.UC_ARCH_RISCV, unicorn.UC_MODE_RISCV64)
    uc.mem_map(at & ~0xFFF, 0x1000)
    uc.mem_write(at, raw)
    for n, v in regs.items():
        if n:
            uc.reg_write(_UC_X[n], v)
    try:
        uc.emu_start(at, 0, count=1)
    except unicorn.UcError as err:  # the next fetch, at an unmapped target, fails
        assert err.errno == unicorn.UC_ERR_FETCH_UNMAPPED
    return uc.reg_read(rvc.UC_RISCV_REG_PC), {n: uc.reg_read(_UC_X[n]) for n in range(32)}


def _random_simulated(rng: random.Random) -> bytes:
    kind = rng.randrange(7)

    def r() -> int:
        return rng.randrange(32)

    if kind == 0:
        return E.encode_jal(r(), rng.randrange(-(1 << 19), 1 << 19) * 2)
    if kind == 1:
        return E.encode_jalr(r(), r(), rng.randrange(-2048, 2048))
    if kind == 2:
        return E.encode_auipc(r(), rng.getrandbits(20))
    if kind == 3:
        return E.encode_branch(rng.choice(sorted(BRANCHES)), r(), r(),
                               rng.randrange(-2048, 2048) * 2)
    if kind == 4:
        return E.encode_c_j(rng.randrange(-1024, 1024) * 2)
    if kind == 5:
        return (E.encode_c_jr, E.encode_c_jalr)[rng.randrange(2)](rng.randrange(1, 32))
    f = (E.encode_c_beqz, E.encode_c_bnez)[rng.randrange(2)]
    return f(rng.randrange(8, 16), rng.randrange(-128, 128) * 2)


def test_rules_agree_with_unicorn() -> None:
    rng = random.Random(7)
    for _ in range(1500):
        raw = _random_simulated(rng)
        page = rng.choice((0x10_0000, 0x7FFF_FFFF_F000, 0xFFFF_FFFF_FFFF_F000))
        at = page + 0x800 + 2 * rng.randrange(64)
        pool = (0, 1, M64, 1 << 63, at, at + 6, rng.getrandbits(64))
        regs = {n: rng.choice(pool) for n in range(1, 32)}
        s = run_rule(raw, regs, at)
        pc, after = unicorn_step(raw, regs, at)
        assert (s.pc, s.x) == (pc, after), (raw.hex(), hex(at))


# -- probed versus unprobed on the machine ----------------------------------------------------

NOP = E.encode_i(0x13, 0, 0, 0, 0)


def _pad(code: bytes, n: int = 64) -> bytes:
    return code + NOP * n


@pytest.mark.parametrize("f3", sorted(BRANCHES))
def test_machine_branches_probed_equal_unprobed(f3: int) -> None:
    code = _pad(E.encode_branch(f3, 5, 6, 16))
    base = 0x40_0000
    for a, b in ((1, 2), (2, 1), (3, 3), (M64, 1)):
        plain, _ = compare_probed("riscv64", code, {"x5": a, "x6": b}, {base + 4, base + 16})
        assert plain.stop == (base + 16 if _taken(f3, a, b) else base + 4)


@pytest.mark.parametrize("raw", [
    E.encode_jal(1, 32), E.encode_jal(0, 32), E.encode_jalr(1, 1, 0), E.encode_jalr(5, 5, 8),
    E.encode_auipc(5, 0x80000), E.encode_c_j(32), E.encode_c_jalr(1), E.encode_c_jr(1),
    E.encode_c_beqz(8, 32), E.encode_c_bnez(8, 32),
])  # fmt: skip
def test_machine_jumps_probed_equal_unprobed(raw: bytes) -> None:
    base = 0x40_0000
    stops = {base + len(raw), base + 32, base + 8}
    for s0 in (0, 1):
        plain, _ = compare_probed("riscv64", _pad(raw), {"ra": base + 8, "x5": base + 24,
                                                         "s0": s0}, stops)
        assert plain.stop in stops
