"""The riscv64 models agree with unicorn on random instances of every modelled class."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from kprobe_ref.arch.riscv64.decode import ROWS
from kprobe_ref.models.riscv64 import CLASSES, REGS
from kprobe_ref.models.state import State
from kprobe_ref.sim.unicorn_cpu import UnicornCpu

BASE, SIZE = 0x1000_0000, 0x20_0000
ADDR = BASE + SIZE // 2


def _word(klass: str, bits: int) -> int:
    row = next(r for r in ROWS if r.klass == klass)
    mask, match = row.mask_match
    w = ((bits & ~mask) | match) & ((1 << row.width) - 1)
    if row.nonzero and not w & row.letter_mask(row.nonzero):
        w |= row.letter_mask(row.nonzero) & -row.letter_mask(row.nonzero)
    return w


@given(st.sampled_from(sorted(CLASSES)), st.integers(0, (1 << 32) - 1),
       st.lists(st.integers(0, (1 << 64) - 1), min_size=31, max_size=31))
def test_model_equals_unicorn(klass: str, bits: int, values: list[int]) -> None:
    w = _word(klass, bits)
    width = CLASSES[klass].width
    regs = dict(zip(REGS, values, strict=True))
    cpu = UnicornCpu("riscv64")
    cpu.map(BASE, SIZE, "rwx")
    cpu.mem_write(ADDR, w.to_bytes(width // 8, "little"))
    for name, value in regs.items():
        cpu.reg_write(name, value)
    cpu.run(ADDR, frozenset(), 1)
    want = CLASSES[klass].step(State(ADDR, regs, {}), w)
    assert cpu.reg_read("pc") == want.pc, hex(w)
    for r in REGS:
        assert cpu.reg_read(r) == want.regs[r], (hex(w), r)
