"""The aarch64 models agree with unicorn on random instances of every modelled class
(BC.cond, which unicorn lacks, against the P-code CPU)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from kprobe_ref.arch.aarch64.decode import ROWS
from kprobe_ref.models.aarch64 import CLASSES, REGS
from kprobe_ref.models.state import State
from kprobe_ref.sim.pcode import PcodeCpu
from kprobe_ref.sim.unicorn_cpu import UnicornCpu

BASE, SIZE = 0x1000_0000, 0x40_0000
ADDR = BASE + SIZE // 2
U64 = st.integers(0, (1 << 64) - 1)


def _word(klass: str, bits: int) -> int:
    mask, match = next(r for r in ROWS if r.klass == klass).mask_match
    w = (bits & ~mask) | match
    if klass.startswith(("ldr", "prfm")):  # keep the literal inside the mapped window
        w &= ~(0x7_FFFF << 5) | (0xFFFF << 5)
    return w & 0xFFFF_FFFF


def _literal(w: int) -> int:
    imm = (w >> 5) & 0x7_FFFF
    return ADDR + ((imm - (1 << 19) if imm >> 18 else imm) << 2)


def _step(cpu: Any, w: int, regs: dict[str, int], fill: bytes) -> dict[str, int]:
    cpu.map(BASE, SIZE, "rwx")
    lit = _literal(w)
    cpu.mem_write(lit, fill)
    cpu.mem_write(ADDR, w.to_bytes(4, "little"))
    for name, value in regs.items():
        cpu.reg_write("nzcv" if name == "pstate" else name, value)
    literal = cpu.mem_read(lit, 16)  # the instruction itself when the offset is 0
    cpu.run(ADDR, frozenset(), 1)
    out = {r: cpu.reg_read("nzcv" if r == "pstate" else r) for r in regs}
    out["pc"] = cpu.reg_read("pc")
    out["literal"] = int.from_bytes(literal, "little")
    out.update({f"q{i}": cpu.reg_read(f"q{i}") for i in range(32)} if isinstance(
        cpu, UnicornCpu) else {})
    return out


def _model(klass: str, w: int, regs: dict[str, int], fill: bytes, q: int) -> State:
    lit = _literal(w)
    mem = {lit + i: b for i, b in enumerate(fill)}
    return CLASSES[klass].step(State(ADDR, regs, mem, {f"q{i}": q for i in range(32)}), w)


def _check(klass: str, bits: int, values: list[int], flags: int, fill: bytes,
           cpu: Any) -> None:
    w = _word(klass, bits)
    regs = {**dict(zip(REGS[:31], values[:31], strict=True)), "sp": values[31] & ~0xF,
            "pstate": flags << 28}
    got = _step(cpu, w, regs, fill)
    want = _model(klass, w, regs, got["literal"].to_bytes(16, "little"), 0)
    assert got["pc"] == want.pc, hex(w)
    for r in REGS:
        if r != "pstate":
            assert got[r] == want.regs[r], (hex(w), r)
    if klass in ("ldr_lit_s", "ldr_lit_d", "ldr_lit_q"):
        t = w & 0x1F
        assert got[f"q{t}"] == want.extras[f"q{t}"], hex(w)


UNICORN_CLASSES = [k for k in CLASSES if k != "bc_cond"]


@given(st.sampled_from(UNICORN_CLASSES), st.integers(0, (1 << 32) - 1),
       st.lists(U64, min_size=32, max_size=32), st.integers(0, 15), st.binary(min_size=16,
                                                                             max_size=16))
def test_model_equals_unicorn(klass: str, bits: int, values: list[int], flags: int,
                              fill: bytes) -> None:
    cpu = UnicornCpu("aarch64")
    for i in range(32):
        cpu.reg_write(f"q{i}", 0)
    _check(klass, bits, values, flags, fill, cpu)


@given(st.integers(0, (1 << 32) - 1), st.lists(U64, min_size=32, max_size=32),
       st.integers(0, 15))
def test_bc_cond_model_equals_the_pcode_cpu(bits: int, values: list[int], flags: int) -> None:
    _check("bc_cond", bits, values, flags, bytes(16), PcodeCpu("aarch64"))
