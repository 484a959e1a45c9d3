"""riscv64 jump-optimized probes: the region an ``auipc``+``jalr`` pair replaces, the dead
register that pair writes, and the detour buffer.

Linux v6.12 does not select ``HAVE_OPTPROBES`` on RISC-V; this follows the design proposed
for it (an ``AUIPC``/``JALR`` pair through a register found free by liveness analysis) with
the x86 rules of ``arch/x86/kernel/kprobes/opt.c`` for everything else:

- The region starts at the probe and takes whole instructions (2 or 4 bytes) until it holds
  the 8 bytes of ``auipc rX, hi; jalr x0, lo(rX)`` (``region-crosses-function-end`` when it
  would leave the function).  Every region instruction is stepped out of line
  (``region-not-boostable`` otherwise): on RISC-V a stepped instruction never reads the PC,
  so it runs unchanged at any address, and it falls through.
- The whole function decodes (``function-undecodable``); no direct branch, jump or call of
  it targets the region after its first byte (``jump-target-in-region``); a function with an
  indirect jump (``jalr x0`` other than ``ret``, ``c.jr`` other than ``c.jr ra``) is refused
  whole (``indirect-jump-in-function``).
- The jump needs a register: one of ``t6``..``t3``, ``t2``..``t0`` that is *dead* at the
  probe (on every path from it, written before it is read; :func:`liveness`) and that no
  region instruction reads or writes, so it is dead after the region too, where the
  detour's jump back writes it again (``no-dead-register`` when none is).
- The detour: the host-call site (an ``ebreak`` the host intercepts before it executes),
  the region's instructions unchanged, and ``auipc rX; jalr x0`` to the first instruction
  after the region; both pairs must reach (+-2 GiB, ``detour-out-of-reach``).

Liveness is computed per instruction over the function's control flow, with the calling
convention at its edges: a call reads the argument registers and the stack pointer and
clobbers every caller-saved register; ``ret`` leaves the return values, the stack, global
and thread pointers and the callee-saved registers live; a jump out of the function (a tail
call) leaves those, the arguments and ``ra`` live.  Anything the analysis cannot classify
(system instructions, undecodable bytes, an indirect jump, falling off the function's end)
makes every register live.  Reads it is unsure of are counted and writes it is unsure of
are not, so the answer errs towards "live".
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from kprobe_ref import bits
from kprobe_ref.arch.base import Decoded, OptPlan, OptRegion, Reader, Verdict
from kprobe_ref.arch.riscv64 import encoding as enc
from kprobe_ref.arch.riscv64.decode import decode
from kprobe_ref.arch.riscv64.encoding import EBREAK

__all__ = ["ALL", "CANDIDATES", "ENTRY", "EXIT", "JUMP_SIZE", "TAIL", "Effect", "Flow",
           "build_detour", "effect", "far_jump", "flow", "liveness", "plan_region"]

JUMP_SIZE = 8
"""``auipc`` + ``jalr``."""
ENTRY = EBREAK
"""The detour's host-call site."""


def _mask(*regs: int) -> int:
    out = 0
    for r in regs:
        out |= 1 << r
    return out & ~1


ALL = _mask(*range(1, 32))
ARGS = _mask(*range(10, 18))
CALLEE_SAVED = _mask(2, 3, 4, 8, 9, *range(18, 28))
"""sp, gp, tp and s0-s11."""
CLOBBERED = _mask(1, 5, 6, 7, *range(10, 18), *range(28, 32))
"""What a call may leave changed: ra, t0-t6, a0-a7."""
EXIT = CALLEE_SAVED | _mask(10, 11)
"""Live when the function returns: the callee-saved registers and a0, a1."""
TAIL = EXIT | ARGS | _mask(1)
"""Live when the function jumps to another (a tail call): also its arguments and ra."""
CANDIDATES = (31, 30, 29, 28, 7, 6, 5)
"""Registers the jump may use, in order of preference: t6..t3, t2..t0."""


@dataclass(frozen=True)
class Effect:
    """What one instruction does for liveness: registers read and written (bit n is xn),
    how control leaves it (``next``, ``branch``, ``jump``, ``call``, ``ret``, ``indirect``,
    ``stop``) and its direct target."""

    uses: int
    defs: int
    kind: str = "next"
    target: int | None = None


# -- register effects ------------------------------------------------------------------------


def _base(w: int, addr: int) -> Effect:
    op, rd, rs1, rs2, f3 = w & 0x7F, enc.rd(w), enc.rs1(w), enc.rs2(w), enc.funct3(w)
    if op in (0x37, 0x17):
        return Effect(0, _mask(rd))
    if op == 0x6F:
        target = bits.add(addr, bits.sext(enc.imm_j(w), enc.J_WIDTH))
        assert isinstance(target, int)
        return _jal(rd, target)
    if op == 0x67:
        return _jalr(rd, rs1, enc.imm_i(w))
    if op == 0x63:
        target = bits.add(addr, bits.sext(enc.imm_b(w), enc.B_WIDTH))
        assert isinstance(target, int)
        return Effect(_mask(rs1, rs2), 0, "branch", target)
    if op == 0x73:
        return _system(f3, rd, rs1)
    return _plain32(op, rd, rs1, rs2)


def _plain32(op: int, rd: int, rs1: int, rs2: int) -> Effect:
    if op in (0x03, 0x13, 0x1B):  # loads, OP-IMM, OP-IMM-32
        return Effect(_mask(rs1), _mask(rd))
    if op in (0x33, 0x3B, 0x2F):  # OP, OP-32, AMO
        return Effect(_mask(rs1, rs2), _mask(rd))
    if op == 0x23:  # stores
        return Effect(_mask(rs1, rs2), 0)
    if op in (0x07, 0x27, 0x53, 0x57):  # FP loads/stores, OP-FP, vector: integer reads only
        return Effect(_mask(rs1, rs2), 0)
    if op in (0x0F, 0x43, 0x47, 0x4B, 0x4F):  # fences, fused multiply-add
        return Effect(0, 0)
    return Effect(ALL, 0, "stop")


def _jal(rd: int, target: int) -> Effect:
    if rd == 0:
        return Effect(0, 0, "jump", target)
    if rd == 1:
        return Effect(ARGS | _mask(2), CLOBBERED, "call", target)
    return Effect(ALL, 0, "stop")  # an alternate link register: millicode, no ABI


def _jalr(rd: int, rs1: int, imm: int) -> Effect:
    if rd == 0 and rs1 == 1 and imm == 0:
        return Effect(_mask(1), 0, "ret")
    if rd == 0:
        return Effect(_mask(rs1), 0, "indirect")
    if rd == 1:
        return Effect(_mask(rs1) | ARGS | _mask(2), CLOBBERED, "call")
    return Effect(ALL, 0, "stop")


def _system(f3: int, rd: int, rs1: int) -> Effect:
    if f3 in (1, 2, 3):
        return Effect(_mask(rs1), _mask(rd))
    if f3 in (5, 6, 7):
        return Effect(0, _mask(rd))
    return Effect(ALL, 0, "stop")


def _compressed(h: int, addr: int) -> Effect:
    quadrant, f3 = h & 3, h >> 13
    if quadrant == 0:
        return _c0(h, f3)
    if quadrant == 1:
        return _c1(h, f3, addr)
    return _c2(h, f3)


def _c0(h: int, f3: int) -> Effect:
    rd_, rs1_ = 8 + ((h >> 2) & 7), 8 + ((h >> 7) & 7)
    if f3 == 0:  # c.addi4spn
        return Effect(_mask(2), _mask(rd_)) if h else Effect(ALL, 0, "stop")
    if f3 in (2, 3):  # c.lw, c.ld
        return Effect(_mask(rs1_), _mask(rd_))
    if f3 in (1, 5):  # c.fld, c.fsd
        return Effect(_mask(rs1_), 0)
    if f3 in (6, 7):  # c.sw, c.sd
        return Effect(_mask(rs1_, rd_), 0)
    return Effect(ALL, 0, "stop")


def _c1(h: int, f3: int, addr: int) -> Effect:
    rd = (h >> 7) & 31
    rdp, rs2p = 8 + ((h >> 7) & 7), 8 + ((h >> 2) & 7)
    if f3 in (0, 1):  # c.addi (c.nop), c.addiw
        return Effect(_mask(rd), _mask(rd))
    if f3 == 2:  # c.li
        return Effect(0, _mask(rd))
    if f3 == 3:  # c.addi16sp (rd = sp), c.lui
        return Effect(_mask(rd) if rd == 2 else 0, _mask(rd))
    if f3 == 4:  # c.srli, c.srai, c.andi; c.sub ... c.addw
        extra = _mask(rs2p) if (h >> 10) & 3 == 3 else 0
        return Effect(_mask(rdp) | extra, _mask(rdp))
    if f3 == 5:  # c.j
        target = bits.add(addr, bits.sext(enc.c_imm_j(h), enc.CJ_WIDTH))
        assert isinstance(target, int)
        return Effect(0, 0, "jump", target)
    target = bits.add(addr, bits.sext(enc.c_imm_b(h), enc.CB_WIDTH))  # c.beqz, c.bnez
    assert isinstance(target, int)
    return Effect(_mask(rdp), 0, "branch", target)


def _c2(h: int, f3: int) -> Effect:
    rd, rs2 = (h >> 7) & 31, (h >> 2) & 31
    if f3 == 0:  # c.slli
        return Effect(_mask(rd), _mask(rd))
    if f3 in (2, 3):  # c.lwsp, c.ldsp
        return Effect(_mask(2), _mask(rd))
    if f3 in (1, 5):  # c.fldsp, c.fsdsp
        return Effect(_mask(2), 0)
    if f3 in (6, 7):  # c.swsp, c.sdsp
        return Effect(_mask(2, rs2), 0)
    if f3 == 4 and not h >> 12 & 1:  # c.jr (rs2 = 0), c.mv
        return _jalr(0, rd, 0) if rs2 == 0 else Effect(_mask(rs2), _mask(rd))
    if f3 == 4 and rs2 == 0:  # c.ebreak (rd = 0), c.jalr
        return Effect(ALL, 0, "stop") if rd == 0 else _jalr(1, rd, 0)
    if f3 == 4:  # c.add
        return Effect(_mask(rd, rs2), _mask(rd))
    return Effect(ALL, 0, "stop")


def effect(raw: bytes, addr: int) -> Effect:
    """The liveness effect of the instruction ``raw`` (2 or 4 bytes) at ``addr``."""
    w = enc.word(raw)
    return _compressed(w, addr) if len(raw) == 2 else _base(w, addr)


# -- the function ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Flow:
    """The decoded instructions of one function, their effects and live-in sets."""

    insns: tuple[Decoded, ...]
    effects: tuple[Effect, ...]
    live: tuple[int, ...]
    """Registers live before each instruction (bit n is xn)."""
    indirect: int | None
    stuck: int | None


def _successors_live(i: int, e: Effect, index: dict[int, int], live: list[int],
                     end: int, start: int) -> int:
    """Registers live after instruction ``i`` (its successors' live-in sets, or the
    convention's set where control leaves the function)."""

    def at(addr: int, leaving: int) -> int:
        if not start <= addr < end:
            return leaving
        j = index.get(addr)
        return ALL if j is None else live[j]

    fall = live[i + 1] if i + 1 < len(live) else ALL
    if e.kind in ("next", "call"):
        return fall
    if e.kind == "branch":
        assert e.target is not None
        return fall | at(e.target, TAIL)
    if e.kind == "jump":
        assert e.target is not None
        return at(e.target, TAIL)
    return EXIT if e.kind == "ret" else ALL


def liveness(insns: tuple[Decoded, ...], effects: tuple[Effect, ...], start: int,
             end: int) -> tuple[int, ...]:
    """The registers live before each instruction: the least fixed point of
    ``live(i) = uses(i) | (live after i & ~defs(i))``, computed backwards until stable."""
    index = {d.address: i for i, d in enumerate(insns)}
    live = [0] * len(insns)
    changed = True
    while changed:
        changed = False
        for i in range(len(insns) - 1, -1, -1):
            e = effects[i]
            after = _successors_live(i, e, index, live, end, start)
            new = (e.uses | (after & ~e.defs)) & ALL
            if new != live[i]:
                live[i], changed = new, True
    return tuple(live)


@lru_cache(maxsize=512)
def flow(code: bytes, start: int) -> Flow:
    """Decode the function ``code`` located at ``start`` and analyse it."""
    insns: list[Decoded] = []
    off, stuck = 0, None
    while off < len(code):
        d = decode(code[off:off + 4], start + off)
        if d.klass == "undecodable":
            stuck = start + off
            break
        insns.append(d)
        off += d.length
    effects = tuple(effect(d.raw, d.address) for d in insns)
    indirect = next((d.address for d, e in zip(insns, effects, strict=True)
                     if e.kind == "indirect"), None)
    live = liveness(tuple(insns), effects, start, start + len(code))
    return Flow(tuple(insns), effects, live, indirect, stuck)


def _region(f: Flow, addr: int) -> tuple[int, list[Decoded]] | str:
    first = next((i for i, d in enumerate(f.insns) if d.address == addr), None)
    if first is None:
        return "not-instruction-boundary"
    out, size = [], 0
    for d in f.insns[first:]:
        out.append(d)
        size += d.length
        if size >= JUMP_SIZE:
            return first, out
    return "region-crosses-function-end"


def _scratch(f: Flow, first: int, region: list[Decoded]) -> int | None:
    touched = 0
    for e in f.effects[first:first + len(region)]:
        touched |= e.uses | e.defs
    return next((r for r in CANDIDATES if not (f.live[first] | touched) >> r & 1), None)


def plan_region(code: bytes, start: int, addr: int, mem: Reader | None = None
                ) -> OptRegion | str:
    """The region a jump at ``addr`` would replace in the function ``code`` (located at
    ``start``) and the dead register the jump uses, or the reason code refusing it.
    ``mem`` is not used: a RISC-V jump table is reached through a register (``jr``),
    which this analysis does not follow, so such a function is refused."""
    f = flow(code, start)
    if f.stuck is not None:
        return "function-undecodable"
    got = _region(f, addr)
    if isinstance(got, str):
        return got
    first, region = got
    if any(d.verdict is not Verdict.STEP_OUT_OF_LINE for d in region):
        return "region-not-boostable"
    end = region[-1].address + region[-1].length
    if any(e.target is not None and addr < e.target < end for e in f.effects):
        return "jump-target-in-region"
    if f.indirect is not None:
        return "indirect-jump-in-function"
    scratch = _scratch(f, first, region)
    if scratch is None:
        return "no-dead-register"
    return OptRegion(tuple(region), scratch)


# -- the detour --------------------------------------------------------------------------------


def far_jump(at: int, target: int, reg: int) -> bytes | None:
    """``auipc reg, hi; jalr x0, lo(reg)`` placed at ``at`` landing on ``target``, or
    ``None`` when the distance does not fit (``hi`` is a signed 20-bit field,
    ``target - at = hi * 4096 + sext(lo)``)."""
    off = bits.to_signed((target - at) & bits.mask(64), 64)
    hi = (off + 0x800) >> 12
    if not -(1 << 19) <= hi < 1 << 19:
        return None
    lo = off - (hi << 12)
    return enc.encode_auipc(reg, hi & 0xFFFFF) + enc.encode_jalr(0, reg, lo)


def build_detour(region: OptRegion, addr: int, detour: int) -> OptPlan | str:
    """The plan of a jump at ``addr`` over ``region`` to a detour at ``detour``, or the
    reason code refusing it."""
    assert region.scratch is not None
    code = bytearray(ENTRY)
    starts, copies = [], []
    for d in region.insns:
        starts.append(d.address - addr)
        copies.append(len(code))
        code += d.raw
    back_at = len(code)
    back = far_jump(detour + back_at, region.end, region.scratch)
    jump = far_jump(addr, detour, region.scratch)
    if back is None or jump is None:
        return "detour-out-of-reach"
    return OptPlan(region.end - addr, tuple(starts), jump, bytes(code + back), len(ENTRY),
                   tuple(copies), back_at)
