"""The x86_64 models agree with unicorn on random instances of every modelled class."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from kprobe_ref.models.state import State, load
from kprobe_ref.models.x86_64 import CLASSES, GPRS, MemOperand, X86Insn
from kprobe_ref.sim.unicorn_cpu import UnicornCpu

BASE, SIZE = 0x40_0000, 0x20_0000
ADDR, STACK, DATA = BASE + 0x1_0000, BASE + 0x10_0000, BASE + 0x18_0000
FLAGS = 0x8C5  # OF, SF, ZF, PF, CF


def _encode(klass: str, cc: int, rm: int, imm: int) -> tuple[bytes, X86Insn]:
    """Bytes of one instance and the model's view of it (memory forms use [rip + disp32]
    when ``rm`` is even, else [rbx + disp8])."""
    # RET imm16 below 0x8000: unicorn (QEMU) sign-extends imm16, the SDM releases imm16
    # bytes (zero-extended), as the model and kprobe_ref do.
    d8, d32, i16 = imm & 0xFF, imm & 0xFFFF_FFFF, imm & 0x7FFF
    simple = {"jcc_rel8": (bytes([0x70 | cc, d8]), d8), "jmp_rel8": (bytes([0xEB, d8]), d8),
              "jcc_rel32": (bytes([0x0F, 0x80 | cc]) + d32.to_bytes(4, "little"), d32),
              "jmp_rel32": (b"\xe9" + d32.to_bytes(4, "little"), d32),
              "call_rel32": (b"\xe8" + d32.to_bytes(4, "little"), d32),
              "ret": (b"\xc3", 0), "ret_imm16": (b"\xc2" + i16.to_bytes(2, "little"), i16),
              "loopne": (bytes([0xE0, d8]), d8), "loope": (bytes([0xE1, d8]), d8),
              "loop": (bytes([0xE2, d8]), d8), "jrcxz": (bytes([0xE3, d8]), d8)}
    if klass in simple:
        code, raw = simple[klass]
        return code, X86Insn(0, 0, len(code), raw)
    ext = 2 if klass.startswith("call") else 4
    if klass.endswith("_reg"):
        modrm = 0xC0 | ext << 3 | (rm & 7)
        code = (b"\x41" if rm >> 3 else b"") + bytes([0xFF, modrm])
        return code, X86Insn(0xFF, modrm, len(code), 0, rm >> 3)
    if rm % 2 == 0:
        modrm, disp = 0x05 | ext << 3, (DATA - (ADDR + 6)) & 0xFFFF_FFFF
        code = bytes([0xFF, modrm]) + disp.to_bytes(4, "little")
        return code, X86Insn(0xFF, modrm, 6, 0, 0, MemOperand("rip", None, 1, disp))
    modrm = 0x43 | ext << 3
    disp = ((d8 ^ 0x80) - 0x80) & 0xFFFF_FFFF
    return bytes([0xFF, modrm, d8]), X86Insn(0xFF, modrm, 3, 0, 0,
                                             MemOperand("rbx", None, 1, disp))


def _opcode(klass: str, code: bytes) -> int:
    """The opcode byte (after REX and the 0F escape)."""
    return code[1] if klass == "jcc_rel32" or code[0] == 0x41 else code[0]


@given(st.sampled_from(sorted(CLASSES)), st.integers(0, 15), st.integers(0, 15),
       st.integers(0, (1 << 32) - 1), st.lists(st.integers(0, (1 << 64) - 1), min_size=16,
                                                max_size=16),
       st.integers(0, FLAGS), st.binary(min_size=16, max_size=16))
def test_model_equals_unicorn(klass: str, cc: int, rm: int, imm: int, values: list[int],
                              flags: int, data: bytes) -> None:
    code, insn = _encode(klass, cc, rm, imm)
    insn = X86Insn(_opcode(klass, code), insn.modrm, insn.length, insn.imm, insn.rex_b,
                   insn.mem)
    regs = dict(zip(GPRS, values, strict=True))
    regs["rsp"], regs["rbx"] = STACK, DATA + 0x80
    if klass in ("loop", "loope", "loopne", "jrcxz") and imm & 1:
        regs["rcx"] = imm >> 31  # 0 or 1: the boundary cases
    regs["rflags"] = (flags & FLAGS) | 2
    cpu = UnicornCpu("x86_64")
    cpu.map(BASE, SIZE, "rwx")
    cpu.mem_write(ADDR, code)
    mem: dict[int, int] = {}
    for where in (STACK, DATA):
        cpu.mem_write(where, data)
        mem.update({where + i: b for i, b in enumerate(data)})
    if insn.mem is not None and insn.mem.base == "rbx":
        where = (regs["rbx"] + ((insn.mem.disp ^ 0x8000_0000) - 0x8000_0000)) % (1 << 64)
        cpu.mem_write(where, data[:8])
        mem.update({where + i: b for i, b in enumerate(data[:8])})
    for name, value in regs.items():
        cpu.reg_write(name, value)
    cpu.run(ADDR, frozenset(), 1)
    want = CLASSES[klass].step(State(ADDR, regs, mem), insn)
    assert cpu.reg_read("rip") == want.pc, code.hex()
    for r in GPRS:
        assert cpu.reg_read(r) == want.regs[r], (code.hex(), r)
    pushed = int.from_bytes(cpu.mem_read(STACK - 8, 8), "little")
    assert pushed == load(want.mem, STACK - 8, 8), code.hex()
