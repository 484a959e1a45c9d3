"""x86_64 out-of-line slots: RIP-relative operands with prefixes, VEX, an immediate after
the displacement; the out-of-reach check; the scratch-register rewrite for far user slots."""

from __future__ import annotations

import capstone
import pytest

from kprobe_ref import OutOfReach
from kprobe_ref.arch import ARCHES, Verdict
from kprobe_ref.arch.x86_64.slot import build_slot, rewrite_to_scratch
from tests.helpers import CODE, DATA, compare_probed, run_snippet, snippet_machine

X86 = ARCHES["x86_64"]
CS = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)


def riprel(prefix: bytes, tail: bytes, target: int, at: int = CODE) -> bytes:
    """``prefix`` (through the ModRM byte), a disp32 reaching ``target``, then ``tail``."""
    length = len(prefix) + 4 + len(tail)
    disp = (target - (at + length)) & 0xFFFF_FFFF
    return prefix + disp.to_bytes(4, "little") + tail


FORMS = {
    "mov r64, m64": (b"\x48\x8b\x05", b""),
    "mov m32, r32": (b"\x89\x0d", b""),
    "mov r16, m16 (66)": (b"\x66\x8b\x05", b""),
    "mov r64, m64 (REX.R r9)": (b"\x4c\x8b\x0d", b""),
    "add m32, imm32": (b"\x81\x05", b"\x78\x56\x34\x12"),
    "cmp m16, imm16 (66)": (b"\x66\x81\x3d", b"\x34\x12"),
    "imul r32, m32, imm8": (b"\x6b\x05", b"\x07"),
    "test m8, imm8": (b"\xf6\x05", b"\x80"),
    "lea r64, m": (b"\x48\x8d\x05", b""),
    "movq xmm0, m64 (F3 0F 7E)": (b"\xf3\x0f\x7e\x05", b""),
    "movdqu xmm1, m128 (F3)": (b"\xf3\x0f\x6f\x0d", b""),
    "vmovdqu xmm2, m128 (VEX)": (b"\xc5\xfa\x6f\x15", b""),
    "vpaddd xmm3, xmm3, m128 (VEX.vvvv)": (b"\xc5\xe1\xfe\x1d", b""),
    "lock add m64, r64": (b"\xf0\x48\x01\x05", b""),
    "pshufd xmm0, m128, imm8": (b"\x66\x0f\x70\x05", b"\x1b"),
}


@pytest.mark.parametrize("name", sorted(FORMS))
def test_rip_relative_forms_run_the_same_from_the_slot(name: str) -> None:
    prefix, tail = FORMS[name]
    code = riprel(prefix, tail, DATA + 0x100)
    d = X86.decode(code + bytes(15), CODE, False)
    assert d.verdict is Verdict.STEP_OUT_OF_LINE and d.reason == "rip-relative-operand"
    assert d.fields["disp_offset"] == len(prefix)
    data = bytes(range(256)) * 2
    end = CODE + len(code)
    regs = {"rax": 0x1111, "rcx": 0x2222_3333, "r9": 5, "rsp": 0x70_1000}
    _plain, probed = compare_probed("x86_64", code + b"\x90", regs, {end}, data=data)
    assert probed.hits == 1


@pytest.mark.parametrize("name", sorted(FORMS))
def test_rewrite_changes_only_the_displacement(name: str) -> None:
    prefix, tail = FORMS[name]
    code = riprel(prefix, tail, DATA + 0x100)
    d = X86.decode(code, CODE, False)
    slot = CODE + 0x1234_5678
    plan = build_slot(d, slot, user=False)
    off = d.fields["disp_offset"]
    new = plan.code[: d.length]
    assert new[:off] == code[:off] and new[off + 4 :] == code[off + 4 :]
    assert plan.code[d.length :] == b"\xcc"
    here = next(CS.disasm(code, CODE))
    there = next(CS.disasm(new, slot))
    assert here.mnemonic == there.mnemonic
    assert CODE + d.length + int.from_bytes(code[off : off + 4], "little", signed=True) == \
        slot + d.length + int.from_bytes(new[off : off + 4], "little", signed=True)


@pytest.mark.parametrize("slot_delta", [(1 << 31) + 0x1000, -(1 << 31) - 0x1000, 1 << 40])
def test_kernel_slot_out_of_reach_is_an_error_not_a_wrap(slot_delta: int) -> None:
    code = riprel(b"\x48\x8b\x05", b"", CODE + 0x100)
    d = X86.decode(code, CODE, False)
    with pytest.raises(OutOfReach) as info:
        build_slot(d, CODE + slot_delta, user=False)
    assert info.value.reason == "rip-relative-out-of-reach"


@pytest.mark.parametrize("name", sorted(FORMS))
def test_scratch_rewrite_keeps_length_and_operation(name: str) -> None:
    prefix, tail = FORMS[name]
    code = riprel(prefix, tail, DATA)
    d = X86.decode(code, CODE, False)
    new, scratch = rewrite_to_scratch(code, d.fields["disp_offset"])
    assert len(new) == len(code)
    before, after = next(CS.disasm(code, CODE)), next(CS.disasm(new, CODE))
    assert before.mnemonic == after.mnemonic
    assert f"[{scratch} + " in after.op_str
    assert scratch in ("rsi", "rdi", "rbx")
    reg_field = (code[d.fields["disp_offset"] - 1] >> 3) & 7
    assert {"rsi": 6, "rdi": 7, "rbx": 3}[scratch] != reg_field


def test_scratch_register_avoids_the_modrm_reg_and_vvvv() -> None:
    # mov rsi, [rip + d]: reg field is rsi (6) -> scratch must not be rsi
    new, scratch = rewrite_to_scratch(riprel(b"\x48\x8b\x35", b"", DATA), 3)
    assert scratch == "rdi"
    # vpaddd xmm6, xmm7(vvvv), [rip+d]: reg 6 and vvvv 7 -> rbx
    new, scratch = rewrite_to_scratch(riprel(b"\xc5\xc1\xfe\x35", b"", DATA), 4)
    assert scratch == "rbx"
    assert "[rbx + " in next(CS.disasm(new, 0)).op_str


def test_slot_fault_is_reported_at_the_probed_address() -> None:
    from kprobe_ref import ProbeBuilder, register_kprobe
    from kprobe_ref.sim import GuestFault

    code = b"\x48\x8b\x00\x90"  # mov rax, [rax]
    m = snippet_machine("x86_64", code)
    faults: list[BaseException] = []
    register_kprobe(m.manager, m.points, ProbeBuilder().with_symbol_addr(CODE)
                    .with_fault_handler(lambda _d, _r, e: faults.append(e)))
    with pytest.raises(GuestFault) as info:
        m.run(CODE, {CODE + 3})
    assert info.value.pc == CODE
    assert len(faults) == 1
    assert not m.manager.ctl_stack()
    # the probe still works after the fault
    m.set_regs(m.arch.regs_class(rax=DATA))
    assert m.run(CODE, {CODE + 3}) == CODE + 3
    _ = run_snippet
