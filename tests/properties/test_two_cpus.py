"""Two CPUs, one answer: every callable corpus function case of x86_64, aarch64 and riscv64
runs on unicorn and on the P-code CPU, and the return value, the memory the function can
write and every ``pt_regs`` register agree.  Register bits that
:mod:`kprobe_ref.sim.undefined` lists as undefined (or as a documented emulator gap) after
an instruction the case executed are not compared.  Functions whose instructions the P-code
CPU has no semantics for are listed in :data:`NO_PCODE_SEMANTICS`: there the P-code run must
stop with a FAULT naming the instruction.
"""

from __future__ import annotations

from functools import cache

import capstone
import pytest

from kprobe_ref.sim.undefined import undefined_mask
from kprobe_ref.tools.verify import Runner, bundled_image, bundled_specs

ISAS = ("x86_64", "aarch64", "riscv64")

NO_PCODE_SEMANTICS: dict[tuple[str, str], str] = {
    ("x86_64", "x86_vex_riprel"): (
        "VEX-encoded AVX moves (vmovq): Ghidra's x86 SLEIGH gives them P-code, but the "
        "P-code CPU implements no AVX state; the function exists to test RIP-relative "
        "relocation of VEX operands, which unicorn runs"),
}
"""Every corpus function the P-code CPU cannot run, with the reason, in one place."""

_CAPSTONE = {
    "x86_64": (capstone.CS_ARCH_X86, capstone.CS_MODE_64),
    "aarch64": (capstone.CS_ARCH_ARM64, capstone.CS_MODE_ARM),
    "riscv64": (capstone.CS_ARCH_RISCV, capstone.CS_MODE_RISCV64 | capstone.CS_MODE_RISCVC),
}


@cache
def _runners(isa: str) -> tuple[Runner, Runner]:
    """Both runners start every case from one frame: unicorn's reset state (its aarch64
    reset NZCV is 0b0100 where the P-code CPU's is 0; the Arm ARM leaves it UNKNOWN)."""
    uni = Runner(isa, bundled_image(isa), cpu="unicorn")
    pc = Runner(isa, bundled_image(isa), cpu="pcode")
    pc.initial_regs = uni.initial_regs.copy()
    return uni, pc


@cache
def _texts(isa: str) -> dict[int, str]:
    """The assembly text of every instruction of every function of the image."""
    r = _runners(isa)[1]
    md = capstone.Cs(*_CAPSTONE[isa])
    out: dict[int, str] = {}
    for name in r.image.functions:
        for addr in r.instructions(name):
            ins = next(md.disasm_lite(r.m.read(addr, 16), addr, count=1), None)
            out[addr] = f"{ins[2]} {ins[3]}".strip() if ins else ""
    return out


def _functions(isa: str) -> list[str]:
    return [n for n, s in bundled_specs(isa).items() if s.callable and s.cases]


CASES = [(isa, name) for isa in ISAS for name in _functions(isa)]


@pytest.mark.slow
@pytest.mark.parametrize("isa", ISAS)
def test_every_corpus_case_agrees_on_both_cpus(isa: str) -> None:
    uni, pc = _runners(isa)
    texts = _texts(isa)
    counts = pc.m.watch(set(texts))
    cpu_regs = pc.m.arch.cpu_regs
    problems: list[str] = []
    for name in _functions(isa):
        for i, case in enumerate(bundled_specs(isa)[name].cases):
            counts.clear()
            want, got = uni.run(name, case), pc.run(name, case)
            where = f"{name} case {i}"
            if (isa, name) in NO_PCODE_SEMANTICS:
                if want.error is not None or got.error is None or "FAULT" not in got.error.upper():
                    problems.append(f"{where}: expected a P-code FAULT, got {got.error!r} "
                                    f"(unicorn: {want.error!r})")
                continue
            if (want.ret, want.error) != (got.ret, got.error):
                problems.append(f"{where}: unicorn {want.ret!r}/{want.error!r}, "
                                f"pcode {got.ret!r}/{got.error!r}")
            if want.memory != got.memory:
                problems.append(f"{where}: memory differs")
            executed = [texts[a] for a, n in counts.items() if n]
            ru, rp = uni.m.regs(), pc.m.regs()
            for field, cpu_name in cpu_regs.items():
                mask = 0
                for asm in executed:
                    mask |= undefined_mask(isa, asm, cpu_name)
                a, b = ru.get(field) & ~mask, rp.get(field) & ~mask
                if a != b:
                    problems.append(f"{where}: {field} unicorn {a:#x} pcode {b:#x}")
    assert not problems, "\n".join(problems[:40])


def test_functions_without_pcode_semantics_exist_and_fault_naming_the_instruction() -> None:
    for (isa, name), _reason in NO_PCODE_SEMANTICS.items():
        spec = bundled_specs(isa)[name]
        got = _runners(isa)[1].run(name, spec.cases[0])
        assert got.error is not None and "FAULT" in got.error.upper(), got
        assert any(m in got.error.lower() for m in ("vmov", "vex", "avx", "ymm", "xmm")), got


@pytest.mark.parametrize("word", [0x68C12C0A, 0x69C12C0A, 0x69412C0A, 0x69FF2FEA, 0x69402C0A])
def test_aarch64_ldpsw_override_agrees_with_unicorn(word: int) -> None:
    """Ghidra reads LDPSW's second word 8 bytes on; every addressing form, SP base too."""
    from kprobe_ref.sim.pcode import PcodeCpu
    from kprobe_ref.sim.unicorn_cpu import UnicornCpu

    seen = []
    for cpu in (UnicornCpu("aarch64"), PcodeCpu("aarch64")):
        cpu.map(0x10000, 0x1000, "rx")
        cpu.map(0x20000, 0x1000, "rw")
        cpu.mem_write(0x10000, word.to_bytes(4, "little"))
        cpu.mem_write(0x20000, bytes(range(0x80, 0x100)) * 2)
        cpu.reg_write("x0", 0x20040)
        cpu.reg_write("sp", 0x20040)
        cpu.run(0x10000, frozenset({0x10004}), 1)
        seen.append([cpu.reg_read(r) for r in ("x0", "sp", "x10", "x11")])
    assert seen[0] == seen[1]
