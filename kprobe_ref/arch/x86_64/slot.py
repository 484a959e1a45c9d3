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
"""

from __future__ import annotations

from kprobe_ref.arch.base import Decoded, SlotPlan, Verdict
from kprobe_ref.arch.x86_64.encoding import INT3, LEGACY_PREFIXES, MAP_VEX, REX_PREFIXES, parse
from kprobe_ref.bits import to_signed
from kprobe_ref.errors import OutOfReach

__all__ = ["build_slot", "rewrite_displacement", "rewrite_to_scratch"]

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
        return SlotPlan(d.raw + INT3, d.length, d.length, "copy")
    off = d.fields["disp_offset"]
    try:
        code = rewrite_displacement(d.raw, off, d.address, slot_addr)
        return SlotPlan(code + INT3, d.length, d.length, "rip-displacement")
    except OverflowError as exc:
        if not user:
            raise OutOfReach(
                f"{d.text!r} at {d.address:#x}: a slot at {slot_addr:#x} needs displacement "
                f"{exc.args[0]:#x}, which does not fit in 32 bits",
                "rip-relative-out-of-reach",
                d.address,
            ) from None
    code, scratch = rewrite_to_scratch(d.raw, off)
    return SlotPlan(code + INT3, d.length, d.length, "rip-scratch-register", scratch,
                    (d.address + d.length) & ((1 << 64) - 1))
