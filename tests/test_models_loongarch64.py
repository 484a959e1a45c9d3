"""The loongarch64 models agree with the P-code CPU (Ghidra's LoongArch specification with
kprobe_ref's corrections) on random instances of every modelled class."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kprobe_ref.arch.loongarch64.decode import ROWS
from kprobe_ref.models.loongarch64 import CLASSES, EXTRAS, REGS
from kprobe_ref.models.state import State
from kprobe_ref.sim.pcode import PcodeCpu

BASE, SIZE = 0x1000_0000, 0x1000
ADDR = BASE + 0x800
U64 = st.integers(0, (1 << 64) - 1)


def _word(klass: str, bits: int) -> int:
    mask, match = next(r for r in ROWS if r.klass == klass).mask_match
    return ((bits & ~mask) | match) & 0xFFFF_FFFF


@pytest.mark.parametrize("klass", sorted(CLASSES))
@given(bits=st.integers(0, (1 << 32) - 1),
       values=st.lists(U64, min_size=31, max_size=31), fcc=st.integers(0, 0xFF),
       addr=st.sampled_from([ADDR, BASE + 0xFFC, BASE]))
def test_model_equals_the_pcode_cpu(klass: str, bits: int, values: list[int], fcc: int,
                                    addr: int) -> None:
    w = _word(klass, bits)
    regs = dict(zip(REGS, values, strict=True))
    flags = {name: (fcc >> i) & 1 for i, name in enumerate(EXTRAS)}
    cpu = PcodeCpu("loongarch64")
    cpu.map(BASE, SIZE, "rwx")
    cpu.mem_write(addr, w.to_bytes(4, "little"))
    for name, value in {**regs, **flags}.items():
        cpu.reg_write(name, value)
    cpu.run(addr, frozenset(), 1)
    want = CLASSES[klass].step(State(addr, regs, {}, flags), w)
    assert cpu.reg_read("pc") == want.pc, hex(w)
    for r in REGS:
        assert cpu.reg_read(r) == want.regs[r], (hex(w), r)
    for e in EXTRAS:
        assert cpu.reg_read(e) == want.extras[e], (hex(w), e)


def test_every_class_is_drawn_from_a_row_of_its_own() -> None:
    for klass in CLASSES:
        w = _word(klass, 0xFFFF_FFFF)
        assert [r.klass for r in ROWS if r.matches(w)] == [klass]
