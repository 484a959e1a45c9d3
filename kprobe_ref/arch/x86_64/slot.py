"""x86_64 out-of-line slots and RIP-relative relocation.

A slot holds the probed instruction followed by ``int3`` (the end-of-step breakpoint), as in
Linux since it stopped single-stepping with TF (``arch/x86/kernel/kprobes/core.c``,
``prepare_singlestep``).  The only PC-dependent part of a stepped instruction is a
RIP-relative ModRM operand, ``[rip + disp32]``, whose address is ``next_ip + disp32``.
Two relocations exist:

- *Displacement rewrite* (kernel slots, and user slots within reach): at the slot the
  operand must address the same byte, so ``disp' = disp + (addr - slot)``.  This must fit in
  a signed 32-bit field; when it does not, registration fails with ``OutOfReach``, never a
  silent wrap.
- *Scratch register* (user slots beyond +-2 GiB, after Linux's
  ``arch/x86/kernel/uprobes.c``, ``riprel_analyze``): ModRM ``00 reg 101`` becomes
  ``10 reg rrr`` with ``rrr`` one of rsi, rdi, rbx not named by the instruction, REX.B /
  VEX.B / EVEX.X are adjusted so ``rrr`` means the low register, and during the step the
  scratch register holds the original ``next_ip``.  Its own value is restored after.

Boosted variant (``docs/boost.md``), at :data:`BOOST_OFFSET` in the slot: the instruction
relocated for that address, then a jump to ``next_ip`` instead of ``int3``:

- ``jmp rel32`` (``E9 cd``, 5 bytes, +-2 GiB) when it reaches, as Linux's
  ``synthesize_reljump`` does;
- in a process, when it does not reach (the out-of-line area lies far from the text),
  ``jmp [rip+0]`` followed by the 8-byte address (``FF 25 00000000``, 14 bytes).  A kernel
  slot never uses it: kernels built with retpolines or IBT forbid such an indirect jump;
- otherwise no variant (two traps).

The instruction must also pass :func:`boost_refusal`, this project's ``can_boost()``.
"""

from __future__ import annotations

from kprobe_ref import bits
from kprobe_ref.arch.base import Decoded, Reach, SlotPlan, SlotReach, Verdict, jump_back
from kprobe_ref.arch.x86_64.encoding import (
    BREAK_STEP,
    LEGACY_PREFIXES,
    MAP_0F,
    MAP_1BYTE,
    MAP_VEX,
    REX_PREFIXES,
    Insn,
    parse,
)
from kprobe_ref.bits import BV, Cond, to_signed
from kprobe_ref.errors import OutOfReach

__all__ = ["BOOST_OFFSET", "BOOST_REACH", "SLOT_SIZE", "TWO_BYTE_BOOSTABLE", "boost_refusal",
           "build_boosted_slot", "build_slot", "jump_abs", "jump_reaches", "jump_rel32_field",
           "reach", "rewrite_displacement", "rewrite_to_scratch"]

SLOT_SIZE = 64
"""Bytes one slot takes: the two-trap variant and the boosted one."""
BOOST_OFFSET = 16
"""The boosted variant's place in a 64-byte slot: after the two-trap variant (at most 15
bytes of instruction and ``int3``); it takes at most 15 + 14 bytes."""
BOOST_REACH = (1 << 31) - (1 << 20)
"""How far from the code a kernel slot may lie for ``jmp rel32`` back to reach."""
JMP_REL32_LEN = 5
JMP_ABS_LEN = 14

SCRATCH_CHOICES: tuple[tuple[int, str], ...] = ((6, "rsi"), (7, "rdi"), (3, "rbx"))
"""Scratch registers in order of preference (rbx last: cmpxchg8b/16b read it)."""


def new_displacement(disp: int, addr: int, slot: int) -> int:
    """The signed displacement that makes ``[rip + disp']`` at ``slot`` address what
    ``[rip + disp]`` addressed at ``addr`` (instruction length cancels out)."""
    return to_signed(disp, 32) + addr - slot


def rewrite_displacement(raw: bytes, disp_offset: int, addr: int, slot: int) -> bytes:
    """Return the instruction with its disp32 relocated from ``addr`` to ``slot``.

    Raises ``OverflowError`` when the new displacement does not fit in 32 bits."""
    old = int.from_bytes(raw[disp_offset : disp_offset + 4], "little")
    new = new_displacement(old, addr, slot)
    if not -(1 << 31) <= new < (1 << 31):
        raise OverflowError(new)
    field = (new & 0xFFFF_FFFF).to_bytes(4, "little")
    return raw[:disp_offset] + field + raw[disp_offset + 4 :]


def _vvvv(raw: bytes, vex_at: int) -> int:
    """The low three bits of VEX/EVEX.vvvv (stored inverted), or -1 without VEX."""
    lead = raw[vex_at]
    if lead == 0xC5:
        byte = raw[vex_at + 1]
    elif lead in (0xC4, 0x8F, 0x62):
        byte = raw[vex_at + 2]
    else:
        return -1
    return ((byte >> 3) & 7) ^ 7


def rewrite_to_scratch(raw: bytes, disp_offset: int) -> tuple[bytes, str]:
    """Turn ``[rip + disp32]`` into ``[scratch + disp32]``; return the bytes and the
    scratch register's name.  The instruction keeps its length."""
    modrm_at = disp_offset - 1
    modrm = raw[modrm_at]
    reg = (modrm >> 3) & 7
    insn = parse(raw, 0)
    prefix_end = next(i for i, b in enumerate(raw) if b not in LEGACY_PREFIXES | REX_PREFIXES)
    vvvv = _vvvv(raw, prefix_end) if insn is not None and insn.opmap == MAP_VEX else -1
    number, name = next((n, r) for n, r in SCRATCH_CHOICES if n not in (reg, vvvv))
    out = bytearray(raw)
    out[modrm_at] = 0x80 | (reg << 3) | number
    _clear_rm_extension(out, prefix_end)
    return bytes(out), name


def _clear_rm_extension(out: bytearray, prefix_end: int) -> None:
    """Make ModRM.rm name a low register: clear REX.B, or set the inverted VEX3/XOP.B and
    EVEX.X bits (Linux sets both, 0x60, which is harmless without a SIB byte)."""
    for i in range(prefix_end):
        if out[i] in REX_PREFIXES:
            out[i] &= 0xFE
    if prefix_end < len(out) and out[prefix_end] in (0xC4, 0x8F, 0x62):
        out[prefix_end + 1] |= 0x60


def build_slot(d: Decoded, slot_addr: int, user: bool) -> SlotPlan:
    """Build the slot for a stepped instruction placed at ``slot_addr``."""
    assert d.verdict is Verdict.STEP_OUT_OF_LINE
    if "disp_offset" not in d.fields:
        return SlotPlan(d.raw + BREAK_STEP, d.length, d.length, "copy")
    off = d.fields["disp_offset"]
    try:
        code = rewrite_displacement(d.raw, off, d.address, slot_addr)
        return SlotPlan(code + BREAK_STEP, d.length, d.length, "rip-displacement")
    except OverflowError as exc:
        if not user:
            raise OutOfReach(
                f"{d.text!r} at {d.address:#x}: a slot at {slot_addr:#x} needs displacement "
                f"{exc.args[0]:#x}, which does not fit in 32 bits",
                "rip-relative-out-of-reach",
                d.address,
            ) from None
    code, scratch = rewrite_to_scratch(d.raw, off)
    return SlotPlan(code + BREAK_STEP, d.length, d.length, "rip-scratch-register", scratch,
                    (d.address + d.length) & ((1 << 64) - 1))


# -- boosting ---------------------------------------------------------------------------------

TWO_BYTE_BOOSTABLE: frozenset[int] = frozenset(
    row * 16 + col
    for row, cols in enumerate((
        "0011001011000000", "0000000000000001", "1111000000000000", "0100000000000000",
        "1111111111111111", "0000000000000000", "1111111111110011", "0000111100000011",
        "0000000000000000", "1111111111111111", "1101110011011101", "1111111100011111",
        "1100000011111111", "0111010011011101", "0110010011011101", "0111010011101110",
    ))
    for col, flag in enumerate(cols)
    if flag == "1"
)  # fmt: skip
"""Second opcode bytes (after ``0F``) whose instructions may run in a boosted slot, one
row of sixteen per high nibble.  Data from Linux ``arch/x86/kernel/kprobes/core.c``
(``twobyte_is_boostable``, v6.12).  It leaves out system instructions (groups 6 and 7,
``syscall``/``sysret``, moves to control and debug registers, ``rdmsr``/``wrmsr``,
``cpuid``, ``rsm``), ``ud1``/``ud2``, ``Jcc rel32`` and many SSE encodings."""

_ONE_BYTE_REFUSED: dict[int, str] = {
    0x62: "bound (EVEX)", **{op: "jcc" for op in range(0x70, 0x80)}, 0x9A: "far call",
    0xCC: "int3", 0xCD: "int n", 0xCE: "into", 0xD6: "undefined (salc)",
    **{op: "x87 escape" for op in range(0xD8, 0xE0)},
    **{op: "loop/jrcxz" for op in range(0xE0, 0xE4)}, 0xE8: "call", 0xE9: "jmp", 0xEB: "jmp",
    0xF1: "int1", 0xF4: "hlt",
}  # fmt: skip
"""One-byte opcodes never boosted, with why (Linux's ``can_boost`` switch)."""

_GROUP_BOOSTABLE: dict[int, frozenset[int]] = {
    **{op: frozenset({0, 1, 2, 3, 4, 5, 7}) for op in (0xC0, 0xC1, 0xD0, 0xD1, 0xD2, 0xD3)},
    0xF6: frozenset({0, 2, 3, 4, 5, 6, 7}), 0xF7: frozenset({0, 2, 3, 4, 5, 6, 7}),
    0xFE: frozenset({0, 1}), 0xFF: frozenset({0, 1, 4}),
}  # fmt: skip
"""Group opcodes: the ModRM.reg values that may be boosted (group 2 without the /6 alias
AMD and Intel disagree on, group 3 without the /1 alias, group 4 INC/DEC, group 5 INC/DEC
and JMP)."""


def boost_refusal(insn: Insn) -> str | None:
    """Why the instruction may not run in a boosted slot (``None``: it may).  This
    project's ``can_boost()``: three-byte opcode maps and the ``2E`` and address-size
    (``67``) prefixes are refused as in Linux (which checks the prefixes of one-byte
    opcodes only; here they refuse every map), two-byte opcodes follow
    :data:`TWO_BYTE_BOOSTABLE`, one-byte opcodes :data:`_ONE_BYTE_REFUSED` and the group
    rules.  VEX/EVEX/XOP instructions are boosted: none transfers control (Linux reaches
    the same answer for most of them by looking at the byte after the VEX prefix as if it
    were a one-byte opcode)."""
    if insn.prefixes & {0x2E, 0x67}:
        return "cs or address-size prefix"
    if insn.opmap == MAP_VEX:
        return None
    if insn.opmap == MAP_0F:
        return None if insn.opcode in TWO_BYTE_BOOSTABLE else "two-byte opcode not boostable"
    if insn.opmap != MAP_1BYTE:
        return "three-byte opcode"
    if insn.opcode in _ONE_BYTE_REFUSED:
        return _ONE_BYTE_REFUSED[insn.opcode]
    allowed = _GROUP_BOOSTABLE.get(insn.opcode)
    if allowed is not None and (insn.modrm_reg is None or insn.modrm_reg not in allowed):
        return "group opcode extension not boostable"
    return None


def jump_reaches(at: BV, target: BV) -> Cond:
    """Whether ``jmp rel32`` at ``at`` can land on ``target``: ``target - (at + 5)`` fits a
    signed 32-bit field."""
    off = bits.sub(target, bits.add(at, JMP_REL32_LEN))
    return bits.eq(bits.sext(bits.extract(off, 31, 0), 32), off)


def jump_rel32_field(at: BV, target: BV) -> BV:
    """The rel32 field of ``jmp target`` placed at ``at`` (meaningful when
    :func:`jump_reaches`)."""
    return bits.extract(bits.sub(target, bits.add(at, JMP_REL32_LEN)), 31, 0)


def jump_abs(target: int) -> bytes:
    """``jmp [rip+0]`` and the 8-byte target it loads: reaches anywhere, writes no
    register."""
    return b"\xff\x25" + bytes(4) + (target & bits.mask(64)).to_bytes(8, "little")


def build_boosted_slot(d: Decoded, slot_addr: int, user: bool) -> SlotPlan | None:
    """The boosted variant placed at ``slot_addr`` (see the module docstring), or ``None``
    when the instruction may not be boosted, needs a scratch register there, or no jump
    form reaches the next instruction."""
    assert d.verdict is Verdict.STEP_OUT_OF_LINE
    insn = parse(d.raw, d.address)
    if insn is None or boost_refusal(insn) is not None:
        return None
    try:
        plan = build_slot(d, slot_addr, user)
    except OutOfReach:
        return None
    if plan.scratch is not None:
        return None
    code, at = plan.code[: d.length], slot_addr + d.length
    target = (d.address + d.length) & bits.mask(64)
    if jump_reaches(at, target):
        field = bits.concrete(jump_rel32_field(at, target), "a rel32 field")
        jump = b"\xe9" + field.to_bytes(4, "little")
    elif user:
        jump = jump_abs(target)
    else:
        return None
    return SlotPlan(code + jump, d.length, d.length, plan.rule + "+jump", boosted=True)


_REL32 = (-(1 << 31), (1 << 31) - 1)


def _rip_reach(d: Decoded, at: int) -> Reach:
    """The constraint of the ``[rip + disp32]`` operand of ``d`` copied ``at`` bytes into the
    slot: its rewritten displacement (:func:`new_displacement`) fits 32 bits."""
    off = d.fields["disp_offset"]
    disp = to_signed(int.from_bytes(d.raw[off : off + 4], "little"), 32)
    return Reach(d.address + d.length + disp, at + d.length, *_REL32,
                 "the rip-relative operand's disp32, +-2 GiB")


def reach(d: Decoded, user: bool) -> SlotReach:
    """Where a slot for ``d`` may go.  A kernel slot must keep a ``[rip + disp32]`` operand
    within 32 bits of its target (Linux's slots come from the module area, within 2 GiB of
    kernel text); a process slot borrows a scratch register instead and may go anywhere.
    The boosted variant needs its relocated copy in reach too, and in the kernel its
    ``jmp rel32`` back (a process variant jumps back through ``jmp [rip+0]``)."""
    rip = "disp_offset" in d.fields
    required: tuple[Reach, ...] = (_rip_reach(d, 0),) if rip and not user else ()
    boost: tuple[Reach, ...] = (_rip_reach(d, BOOST_OFFSET),) if rip else ()
    if not user:
        boost += (jump_back(d, BOOST_OFFSET + d.length + JMP_REL32_LEN, *_REL32,
                            "jmp rel32 back, +-2 GiB"),)
    return SlotReach(required, boost)
