"""The ISA records of the P-code CPU: each one is complete, and what it declares is what
the ISA-neutral CPU does (packed flag registers, the program counter, overrides)."""

from __future__ import annotations

import pytest

from kprobe_ref.sim.pcode import CALLOTHERS, ISAS, LANGUAGES, PcodeCpu
from kprobe_ref.sim.pcode.overrides import aarch64 as arm_overrides
from kprobe_ref.sim.pcode.overrides import loongarch64 as la_overrides


@pytest.mark.parametrize("isa", sorted(ISAS))
def test_every_record_names_its_pc_and_packed_registers(isa: str) -> None:
    record, cpu = ISAS[isa], PcodeCpu(isa)
    assert record.name == isa and LANGUAGES[isa] == record.language
    assert record.pc in cpu.regmap and CALLOTHERS[isa] == dict(record.callothers)
    assert set(cpu.register_names()) == set(cpu.regmap) | {p.name for p in record.packed}
    cpu.reg_write(record.pc, 0x1234)
    assert cpu.reg_read(record.pc) == 0x1234


def test_rflags_keeps_bits_outside_the_flags_and_nzcv_drops_them() -> None:
    x86, arm = PcodeCpu("x86_64"), PcodeCpu("aarch64")
    x86.reg_write("rflags", 0x8D5 | 1 << 40)
    arm.reg_write("nzcv", 0xA000_0001)
    assert x86.reg_read("rflags") == 0x8D7 | 1 << 40
    assert arm.reg_read("nzcv") == 0xA000_0000
    saved = x86.save_context()
    x86.reg_write("rflags", 0)
    assert x86.reg_read("rflags") == 0x2
    x86.restore_context(saved)
    assert x86.reg_read("rflags") == 0x8D7 | 1 << 40


def test_override_hooks_replace_exactly_the_table_entries() -> None:
    ldpsw = 0x6940_0C41  # ldpsw x1, x3, [x2]
    la = next(o.match for o in la_overrides.OVERRIDES if o.mnemonic == "revh.d")
    arm_cpu, la_cpu = PcodeCpu("aarch64"), PcodeCpu("loongarch64")
    arm_hook, la_hook = ISAS["aarch64"].override, ISAS["loongarch64"].override
    assert arm_hook is not None and la_hook is not None
    assert ISAS["x86_64"].override is None and ISAS["riscv64"].override is None
    assert arm_overrides.lookup(ldpsw) is not None
    replaced = arm_hook(arm_cpu, ldpsw)
    assert replaced is not None and replaced[0].startswith("ldpsw")
    assert arm_hook(arm_cpu, 0xD503_201F) is None  # nop
    replaced = la_hook(la_cpu, la)
    assert replaced is not None and replaced[0] == "revh.d"
    assert la_hook(la_cpu, 0x0340_0000) is None  # nop
