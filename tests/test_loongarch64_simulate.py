"""loongarch64 simulated classes from concrete encodings: every class taken and not taken,
immediate edges, register aliasing (``jirl ra, ra, 0``, rd == rj), PC-relative results
wrapping at 2**64.  Each rule is checked three ways: against values written here from the
manual, against the P-code CPU single-stepping the same word, and on the machine probed
versus unprobed."""

from __future__ import annotations

import random

import pytest

from kprobe_ref.arch import ARCHES, Decoded, Verdict
from kprobe_ref.arch.loongarch64 import encoding as E
from kprobe_ref.bits import BV
from kprobe_ref.sim.cpu import StopKind
from kprobe_ref.sim.pcode import PcodeCpu
from tests.helpers import compare_probed

LA = ARCHES["loongarch64"]
M64 = (1 << 64) - 1
AT = 0x40_2000
BRANCHES = ("beq", "bne", "blt", "bge", "bltu", "bgeu")
PC_REL = ("pcaddi", "pcalau12i", "pcaddu12i", "pcaddu18i")
SHIFT = {"pcaddi": 2, "pcalau12i": 12, "pcaddu12i": 12, "pcaddu18i": 18}


class DictState:
    """A plain SimState over registers ``r0``..``r31`` and flags ``fcc0``..``fcc7``; it
    fails if a rule reads a register after writing one."""

    def __init__(self, address: int, regs: dict[int, int], fcc: dict[int, int]) -> None:
        self._address = address
        self.r = {n: regs.get(n, 0) & M64 for n in range(32)}
        self.r[0] = 0
        self.fcc = {n: fcc.get(n, 0) for n in range(8)}
        self.pc: int | None = None
        self.writes: list[str] = []

    @property
    def address(self) -> int:
        return self._address

    def reg(self, name: str) -> int:
        assert not self.writes, f"read {name} after a write: {self.writes}"
        return self.r[int(name[1:])]

    def set_reg(self, name: str, value: BV) -> None:
        assert isinstance(value, int)
        self.writes.append(name)
        if name != "r0":
            self.r[int(name[1:])] = value & M64

    def set_pc(self, value: BV) -> None:
        assert isinstance(value, int)
        self.writes.append("pc")
        self.pc = value & M64

    def load(self, addr: BV, size: int) -> int:
        raise AssertionError("no loongarch rule reads memory")

    def store(self, addr: BV, size: int, value: BV) -> None:
        raise AssertionError("no loongarch rule writes memory")

    def extra(self, name: str) -> int:
        assert name.startswith("fcc") and not self.writes
        return self.fcc[int(name[3:])]

    def set_extra(self, name: str, value: BV) -> None:
        raise AssertionError(name)


def decode(raw: bytes, at: int = AT) -> Decoded:
    d = LA.decode(raw, at, False)
    assert d.verdict is Verdict.SIMULATE, d
    return d


def run_rule(raw: bytes, regs: dict[int, int], at: int = AT,
             fcc: dict[int, int] | None = None) -> DictState:
    s = DictState(at, regs, fcc or {})
    LA.simulate(decode(raw, at), s)
    return s


def _signed(x: int) -> int:
    return x - (1 << 64) if x >> 63 else x


def _taken(klass: str, a: int, b: int) -> bool:
    sa, sb = _signed(a), _signed(b)
    return {"beq": a == b, "bne": a != b, "blt": sa < sb, "bge": sa >= sb,
            "bltu": a < b, "bgeu": a >= b}[klass]


# -- values from the manual -------------------------------------------------------------------


@pytest.mark.parametrize("offset", [-(1 << 27), -4, 0, 4, (1 << 27) - 4])
def test_b_and_bl_edges(offset: int) -> None:
    s = run_rule(E.encode_b(offset), {1: 77})
    assert s.pc == (AT + offset) & M64 and s.r[1] == 77
    s = run_rule(E.encode_bl(offset), {1: 77})
    assert s.pc == (AT + offset) & M64 and s.r[1] == AT + 4


def test_jirl_ra_ra_0_jumps_to_old_ra() -> None:
    s = run_rule(E.encode_jirl(1, 1, 0), {1: 0x1234_5678})
    assert s.pc == 0x1234_5678 and s.r[1] == AT + 4


@pytest.mark.parametrize("offset", [-(1 << 17), -4, 0, 4, (1 << 17) - 4])
def test_jirl_rd_equals_rj_immediate_edges(offset: int) -> None:
    s = run_rule(E.encode_jirl(12, 12, offset), {12: 0x8000_0000})
    assert s.pc == (0x8000_0000 + offset) & M64 and s.r[12] == AT + 4


def test_jirl_zero_is_a_plain_jump_and_keeps_the_low_bits() -> None:
    s = run_rule(E.encode_jirl(0, 1, 8), {1: 0x5001})
    assert s.pc == 0x5009 and s.r[0] == 0 and s.r[1] == 0x5001


@pytest.mark.parametrize("klass", BRANCHES)
@pytest.mark.parametrize("offset", [-(1 << 17), -4, (1 << 17) - 4])
def test_branches_taken_and_not_taken(klass: str, offset: int) -> None:
    raw = E.encode_branch(klass, 6, 7, offset)
    assert decode(raw).klass == klass
    values = (0, 1, 2, M64, 1 << 63, (1 << 63) - 1)
    for a in values:
        for b in values:
            s = run_rule(raw, {6: a, 7: b})
            assert s.pc == ((AT + offset) & M64 if _taken(klass, a, b) else AT + 4), (
                klass, hex(a), hex(b))


def test_branch_on_the_same_register_and_r0() -> None:
    assert run_rule(E.encode_branch("beq", 0, 0, 8), {}).pc == AT + 8
    assert run_rule(E.encode_branch("blt", 9, 9, 8), {9: 5}).pc == AT + 4
    assert run_rule(E.encode_branch("bgeu", 0, 9, 8), {9: 5}).pc == AT + 4


@pytest.mark.parametrize("offset", [-(1 << 22), -4, 4, (1 << 22) - 4])
@pytest.mark.parametrize("value", [0, 1, M64])
def test_beqz_bnez(offset: int, value: int) -> None:
    beqz = run_rule(E.encode_beqz(13, offset), {13: value})
    bnez = run_rule(E.encode_bnez(13, offset), {13: value})
    target = (AT + offset) & M64
    assert beqz.pc == (target if value == 0 else AT + 4)
    assert bnez.pc == (target if value != 0 else AT + 4)


@pytest.mark.parametrize("offset", [-(1 << 22), -4, 4, (1 << 22) - 4])
@pytest.mark.parametrize("cj", [0, 3, 7])
def test_bceqz_bcnez_read_the_condition_flag(offset: int, cj: int) -> None:
    target = (AT + offset) & M64
    for flag in (0, 1):
        eq = run_rule(E.encode_bceqz(cj, offset), {}, fcc={cj: flag, (cj + 1) % 8: 1 - flag})
        ne = run_rule(E.encode_bcnez(cj, offset), {}, fcc={cj: flag, (cj + 1) % 8: 1 - flag})
        assert eq.pc == (target if flag == 0 else AT + 4)
        assert ne.pc == (target if flag == 1 else AT + 4)
        assert eq.writes == ["pc"] and ne.writes == ["pc"]


@pytest.mark.parametrize("klass", PC_REL)
@pytest.mark.parametrize("si20", [-(1 << 19), -1, 0, 1, (1 << 19) - 1])
def test_pc_relative_edges(klass: str, si20: int) -> None:
    at = 0x1234_5678_9ABC_DEF0
    s = run_rule(E.encode_pc_rel(klass, 14, si20), {14: 99}, at)
    want = (at + (si20 << SHIFT[klass])) & M64
    if klass == "pcalau12i":
        want &= ~0xFFF
    assert s.r[14] == want and s.pc == at + 4


@pytest.mark.parametrize(("klass", "at", "si20", "expect"), [
    ("pcaddi", 0xFFFF_FFFF_FFFF_FFFC, 1, 0),
    ("pcaddu12i", 0xFFFF_FFFF_FFFF_F000, 1, 0),
    ("pcalau12i", 0xFFFF_FFFF_FFFF_FFFC, 1, 0),
    ("pcaddu18i", 0xFFFF_FFFF_FFFC_0000, 1, 0),
    ("pcaddu18i", 0x10_0000, -1, 0xC_0000),
    ("pcaddu12i", 0x0, -1, 0xFFFF_FFFF_FFFF_F000),
    ("pcaddu18i", 0x7FFF_FFFF_FFFF_0000, (1 << 19) - 1, 0x8000_001F_FFFB_0000),
])  # fmt: skip
def test_pc_relative_wraps_modulo_2_64(klass: str, at: int, si20: int, expect: int) -> None:
    s = run_rule(E.encode_pc_rel(klass, 5, si20), {}, at)
    assert s.r[5] == expect and s.pc == (at + 4) & M64


def test_writes_to_r0_are_dropped() -> None:
    assert run_rule(E.encode_pc_rel("pcaddi", 0, 5), {}).r[0] == 0
    assert run_rule(E.encode_jirl(0, 0, 16), {}).pc == 16


# -- against the P-code CPU executing the word ------------------------------------------------


def pcode_step(raw: bytes, regs: dict[int, int], fcc: dict[int, int],
               at: int) -> tuple[int, dict[int, int]]:
    cpu = PcodeCpu("loongarch64")
    cpu.map(at & ~0xFFF, 0x1000, "rx")
    cpu.mem_write(at, raw)
    for n in range(1, 32):
        cpu.reg_write(f"r{n}", regs.get(n, 0))
    for n in range(8):
        cpu.reg_write(f"fcc{n}", fcc.get(n, 0))
    stop = cpu.run(at, frozenset(), 1)
    assert stop.kind is StopKind.STEP_LIMIT, stop
    return stop.pc, {n: cpu.reg_read(f"r{n}") if n else 0 for n in range(32)}


def _random_simulated(rng: random.Random) -> bytes:
    kind = rng.randrange(8)

    def r() -> int:
        return rng.randrange(32)

    if kind == 0:
        return E.encode_pc_rel(rng.choice(PC_REL), r(), rng.getrandbits(20))
    if kind == 1:
        return (E.encode_b, E.encode_bl)[rng.randrange(2)](rng.randrange(-(1 << 25),
                                                                         1 << 25) * 4)
    if kind == 2:
        return E.encode_jirl(r(), r(), rng.randrange(-(1 << 15), 1 << 15) * 4)
    if kind == 3:
        return E.encode_jirl(1, 1, rng.choice((0, 4, -4)))
    if kind in (4, 5):
        return E.encode_branch(rng.choice(BRANCHES), r(), r(),
                               rng.randrange(-(1 << 15), 1 << 15) * 4)
    if kind == 6:
        f = (E.encode_beqz, E.encode_bnez)[rng.randrange(2)]
        return f(r(), rng.randrange(-(1 << 20), 1 << 20) * 4)
    fc = (E.encode_bceqz, E.encode_bcnez)[rng.randrange(2)]
    return fc(rng.randrange(8), rng.randrange(-(1 << 20), 1 << 20) * 4)


def test_rules_agree_with_the_pcode_cpu() -> None:
    rng = random.Random(11)
    for _ in range(1200):
        raw = _random_simulated(rng)
        page = rng.choice((0x10_0000, 0x7FFF_FFFF_F000, 0xFFFF_FFFF_FFFF_F000))
        at = page + 4 * rng.randrange(1024)
        pool = (0, 1, M64, 1 << 63, at, at + 8, rng.getrandbits(64))
        regs = {n: rng.choice(pool) for n in range(1, 32)}
        fcc = {n: rng.randrange(2) for n in range(8)}
        s = run_rule(raw, regs, at, fcc)
        pc, after = pcode_step(raw, regs, fcc, at)
        assert (s.pc, s.r) == (pc, after), (raw.hex(), hex(at))


# -- probed versus unprobed on the machine ----------------------------------------------------


def _pad(code: bytes, n: int = 64) -> bytes:
    return code + E.NOP * n


@pytest.mark.parametrize("klass", BRANCHES)
def test_machine_branches_probed_equal_unprobed(klass: str) -> None:
    code = _pad(E.encode_branch(klass, 12, 13, 16))
    base = 0x40_0000
    for a, b in ((1, 2), (2, 1), (3, 3), (M64, 1)):
        plain, _ = compare_probed("loongarch64", code, {"t0": a, "t1": b},
                                  {base + 4, base + 16})
        assert plain.stop == (base + 16 if _taken(klass, a, b) else base + 4)


@pytest.mark.parametrize("raw", [
    E.encode_b(32), E.encode_bl(32), E.encode_jirl(1, 1, 0), E.encode_jirl(12, 12, 8),
    E.encode_jirl(0, 1, 0), E.encode_beqz(23, 32), E.encode_bnez(23, 32),
    E.encode_pc_rel("pcaddi", 12, -3), E.encode_pc_rel("pcalau12i", 12, 0x80000),
    E.encode_pc_rel("pcaddu12i", 1, 7), E.encode_pc_rel("pcaddu18i", 1, -1),
])  # fmt: skip
def test_machine_jumps_probed_equal_unprobed(raw: bytes) -> None:
    base = 0x40_0000
    stops = {base + 4, base + 32, base + 8}
    for s0 in (0, 1):
        plain, _ = compare_probed("loongarch64", _pad(raw), {"ra": base + 8,
                                                             "t0": base + 24, "s0": s0}, stops)
        assert plain.stop in stops


MOVGR2CF = 0x0114_D800
"""``movgr2cf $fcc<cd>, rj``: bits 31..10, then rj, then ``00`` and cd."""


@pytest.mark.parametrize("branch", [E.encode_bceqz(2, 32), E.encode_bcnez(2, 32)])
def test_machine_bceqz_bcnez_probed_equal_unprobed(branch: bytes) -> None:
    base = 0x40_0000
    set_flag = (MOVGR2CF | 12 << 5 | 2).to_bytes(4, "little")  # movgr2cf $fcc2, $t0
    for flag in (0, 1, 2):  # bit 0 of t0 is the flag
        plain, _ = compare_probed("loongarch64", _pad(set_flag + branch),
                                  {"t0": flag}, {base + 8, base + 36}, probe_offset=4)
        taken = (flag & 1 == 0) == (branch == E.encode_bceqz(2, 32))
        assert plain.stop == (base + 36 if taken else base + 8)
