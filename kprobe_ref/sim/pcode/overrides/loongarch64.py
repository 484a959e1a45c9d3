"""Corrections to Ghidra's LoongArch SLEIGH specification, applied before its P-code.

The P-code CPU (:mod:`kprobe_ref.sim.pcode`) asks :func:`lookup` about every LoongArch
instruction word before translating it (through the ISA record,
:mod:`kprobe_ref.sim.pcode.isa.loongarch64`).  Each entry of :data:`OVERRIDES` names an
instruction by a bit pattern written from the LoongArch Reference Manual, volume 1
(v1.10), chapter 2 (basic integer instructions), and computes the instruction's effect from
the registers with :mod:`kprobe_ref.bits`.  Each function's docstring gives the manual's
definition and what Ghidra's P-code gets wrong; every suspected bug was confirmed by running
Ghidra's P-code against the manual's definition first (``docs/pcode-cpu.md`` lists the
suspects that turned out fine).

Field names follow the manual: ``rd`` bits 4..0, ``rj`` 9..5, ``rk`` 14..10; immediates
``ui5``/``ui6``/``lsbw``/``lsbd`` from bit 10, ``msbw``/``msbd`` from bit 16, ``sa2``/``sa3``
from bit 15 and ``si14`` from bit 10.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NoReturn, Protocol

from kprobe_ref import bits
from kprobe_ref.bits import BV

__all__ = ["OVERRIDES", "LoongArchView", "Override", "lookup"]


class LoongArchView(Protocol):
    """What an override may touch: general registers, memory and the LL/SC reservation."""

    def gr(self, n: int) -> BV:
        """General register ``n`` (r0 reads 0)."""

    def set_gr(self, n: int, value: BV) -> None:
        """Write general register ``n`` (writes to r0 are dropped)."""

    def fcc(self, n: int) -> BV:
        """Condition flag ``fcc<n>`` (0 or 1)."""

    def load(self, addr: BV, size: int) -> BV:
        """Guest memory read of ``size`` bytes."""

    def store(self, addr: BV, size: int, value: BV) -> None:
        """Guest memory write of ``size`` bytes."""

    def get_reservation(self) -> int | None:
        """The address reserved by the last ``ll.w``/``ll.d``, or None."""

    def set_reservation(self, addr: int | None) -> None:
        """Set or drop the reservation."""

    def fault(self, detail: str, addr: int) -> NoReturn:
        """Stop the CPU with a FAULT (an address error exception)."""


OverrideFn = Callable[[LoongArchView, int], None]


@dataclass(frozen=True)
class Override:
    """One corrected instruction: ``pattern`` has 32 characters (spaces ignored), ``0``
    and ``1`` are fixed bits, any other character is an operand bit."""

    mnemonic: str
    pattern: str
    fn: OverrideFn
    mask: int = field(init=False)
    match: int = field(init=False)

    def __post_init__(self) -> None:
        p = self.pattern.replace(" ", "")
        assert len(p) == 32, self.mnemonic
        object.__setattr__(self, "mask", int("".join("1" if c in "01" else "0" for c in p), 2))
        object.__setattr__(self, "match", int("".join(c if c in "01" else "0" for c in p), 2))


# ---------------------------------------------------------------------------------------
# Fields


def _rd(w: int) -> int:
    return w & 31


def _rj(w: int) -> int:
    return (w >> 5) & 31


def _rk(w: int) -> int:
    return (w >> 10) & 31


def _imm(w: int, lo: int, width: int) -> int:
    return (w >> lo) & bits.mask(width)


def _sext32(x: BV) -> BV:
    return bits.sext(x, 32, 64)


# ---------------------------------------------------------------------------------------
# Shifts and rotates


def _slli_d(m: LoongArchView, w: int) -> None:
    """SLLI.D rd, rj, ui6: GR[rd] = SLL(GR[rj], ui6).  Ghidra masks the amount with 0x1f,
    so shifts by 32..63 go wrong."""
    m.set_gr(_rd(w), bits.shl(m.gr(_rj(w)), _imm(w, 10, 6)))


def _srli_d(m: LoongArchView, w: int) -> None:
    """SRLI.D rd, rj, ui6: GR[rd] = SRL(GR[rj], ui6).  Ghidra masks the amount with 0x1f."""
    m.set_gr(_rd(w), bits.lshr(m.gr(_rj(w)), _imm(w, 10, 6)))


def _srai_d(m: LoongArchView, w: int) -> None:
    """SRAI.D rd, rj, ui6: GR[rd] = SRA(GR[rj], ui6).  Ghidra masks the amount with 0x1f."""
    m.set_gr(_rd(w), bits.ashr(m.gr(_rj(w)), _imm(w, 10, 6)))


def _rotr(x: BV, n: BV, width: int) -> BV:
    """Rotate the low ``width`` bits of ``x`` right by ``n`` (already reduced mod width)."""
    return bits.or_(bits.lshr(x, n, width), bits.shl(x, bits.sub(width, n, width), width),
                    width)


def _rotr_w(m: LoongArchView, w: int) -> None:
    """ROTR.W rd, rj, rk: GR[rd] = SignExtend(ROTR(GR[rj][31:0], GR[rk][4:0]), 64).
    Ghidra shifts right arithmetically, so copies of bit 31 smear into the result."""
    n = bits.extract(m.gr(_rk(w)), 4, 0)
    m.set_gr(_rd(w), _sext32(_rotr(m.gr(_rj(w)), bits.zext(n, 5, 32), 32)))


def _rotr_d(m: LoongArchView, w: int) -> None:
    """ROTR.D rd, rj, rk: GR[rd] = ROTR(GR[rj], GR[rk][5:0]).  Ghidra shifts right
    arithmetically."""
    n = bits.extract(m.gr(_rk(w)), 5, 0)
    m.set_gr(_rd(w), _rotr(m.gr(_rj(w)), bits.zext(n, 6, 64), 64))


def _rotri_w(m: LoongArchView, w: int) -> None:
    """ROTRI.W rd, rj, ui5: GR[rd] = SignExtend(ROTR(GR[rj][31:0], ui5), 64).  Ghidra
    shifts right arithmetically."""
    m.set_gr(_rd(w), _sext32(_rotr(m.gr(_rj(w)), _imm(w, 10, 5), 32)))


def _rotri_d(m: LoongArchView, w: int) -> None:
    """ROTRI.D rd, rj, ui6: GR[rd] = ROTR(GR[rj], ui6).  Ghidra shifts right
    arithmetically."""
    m.set_gr(_rd(w), _rotr(m.gr(_rj(w)), _imm(w, 10, 6), 64))


# ---------------------------------------------------------------------------------------
# Bit-string insertion, byte picking, half-word reversal


def _insert(dst: BV, src: BV, msb: int, lsb: int, width: int) -> BV:
    """Return ``dst`` with bits msb..lsb replaced by the low bits of ``src``."""
    field_mask = bits.mask(msb - lsb + 1) << lsb
    kept = bits.and_(dst, bits.not_(field_mask, width), width)
    return bits.or_(kept, bits.and_(bits.shl(src, lsb, width), field_mask, width), width)


def _bstrins_w(m: LoongArchView, w: int) -> None:
    """BSTRINS.W rd, rj, msbw, lsbw: GR[rd] = SignExtend({GR[rd][31:msbw+1],
    GR[rj][msbw-lsbw:0], GR[rd][lsbw-1:0]}, 64) (undefined if msbw < lsbw; here rd is then
    only sign-extended).  Ghidra takes the bits of rj from position lsbw instead of 0."""
    msb, lsb = _imm(w, 16, 5), _imm(w, 10, 5)
    rd = m.gr(_rd(w))
    value = _insert(rd, m.gr(_rj(w)), msb, lsb, 32) if msb >= lsb else bits.wrap(rd, 32)
    m.set_gr(_rd(w), _sext32(value))


def _bstrins_d(m: LoongArchView, w: int) -> None:
    """BSTRINS.D rd, rj, msbd, lsbd: GR[rd] = {GR[rd][63:msbd+1], GR[rj][msbd-lsbd:0],
    GR[rd][lsbd-1:0]} (undefined if msbd < lsbd; here rd is then kept).  Ghidra takes the
    bits of rj from position lsbd instead of 0."""
    msb, lsb = _imm(w, 16, 6), _imm(w, 10, 6)
    if msb >= lsb:
        m.set_gr(_rd(w), _insert(m.gr(_rd(w)), m.gr(_rj(w)), msb, lsb, 64))


def _bytepick(rj: BV, rk: BV, sa: int, width: int) -> BV:
    """{rk[width-1-8*sa:0], rj[width-1:width-8*sa]}: rk when sa is 0."""
    if sa == 0:
        return bits.wrap(rk, width)
    return bits.or_(bits.shl(rk, 8 * sa, width), bits.lshr(rj, width - 8 * sa, width), width)


def _bytepick_w(m: LoongArchView, w: int) -> None:
    """BYTEPICK.W rd, rj, rk, sa2: GR[rd] = SignExtend({GR[rk][31-8*sa2:0],
    GR[rj][31:32-8*sa2]}, 64).  Ghidra blends the two registers bytewise with a mask
    instead of concatenating shifted parts."""
    value = _bytepick(m.gr(_rj(w)), m.gr(_rk(w)), _imm(w, 15, 2), 32)
    m.set_gr(_rd(w), _sext32(value))


def _bytepick_d(m: LoongArchView, w: int) -> None:
    """BYTEPICK.D rd, rj, rk, sa3: GR[rd] = {GR[rk][63-8*sa3:0], GR[rj][63:64-8*sa3]}.
    Ghidra blends the two registers bytewise with a mask."""
    m.set_gr(_rd(w), _bytepick(m.gr(_rj(w)), m.gr(_rk(w)), _imm(w, 15, 3), 64))


def _halves(x: BV) -> list[BV]:
    return [bits.extract(x, 16 * i + 15, 16 * i) for i in range(4)]


def _join_halves(hs: list[BV]) -> BV:
    out: BV = 0
    for i, h in enumerate(hs):
        out = bits.or_(out, bits.shl(bits.zext(h, 16, 64), 16 * i))
    return out


def _revh_2w(m: LoongArchView, w: int) -> None:
    """REVH.2W rd, rj: swap the two half-words within each word of GR[rj].  Ghidra adds
    shifted copies of whole words instead."""
    h = _halves(m.gr(_rj(w)))
    m.set_gr(_rd(w), _join_halves([h[1], h[0], h[3], h[2]]))


def _revh_d(m: LoongArchView, w: int) -> None:
    """REVH.D rd, rj: reverse the order of the four half-words of GR[rj].  Ghidra adds
    shifted copies of whole words instead."""
    m.set_gr(_rd(w), _join_halves(_halves(m.gr(_rj(w)))[::-1]))


# ---------------------------------------------------------------------------------------
# LL/SC and atomics


def _ll_sc_addr(m: LoongArchView, w: int, size: int) -> int:
    """vaddr = GR[rj] + SignExtend({si14, 2'b0}, 64); it must be naturally aligned."""
    base = m.gr(_rj(w))
    if not bits.is_concrete(base):
        m.fault("symbolic ll/sc address", 0)
    addr = bits.concrete(bits.add(base, bits.sext(_imm(w, 10, 14) << 2, 16, 64)))
    if addr % size:
        m.fault(f"address error: ll/sc of {size} bytes at unaligned {addr:#x}", addr)
    return addr


def _ll(size: int) -> OverrideFn:
    def ll(m: LoongArchView, w: int) -> None:
        addr = _ll_sc_addr(m, w, size)
        value = m.load(addr, size)
        m.set_reservation(addr)
        m.set_gr(_rd(w), _sext32(value) if size == 4 else value)

    ll.__doc__ = (f"LL.{'W' if size == 4 else 'D'} rd, rj, si14: load and set LLbit with the "
                  "reserved address.  Ghidra's P-code keeps no reservation, so SC could not "
                  "tell success from failure.")
    return ll


def _sc(size: int) -> OverrideFn:
    def sc(m: LoongArchView, w: int) -> None:
        addr = _ll_sc_addr(m, w, size)
        ok = m.get_reservation() == addr
        if ok:
            m.store(addr, size, m.gr(_rd(w)))
        m.set_reservation(None)
        m.set_gr(_rd(w), 1 if ok else 0)

    sc.__doc__ = (f"SC.{'W' if size == 4 else 'D'} rd, rj, si14: store GR[rd] iff LLbit is "
                  "set for this address, then GR[rd] = 1 on success, 0 on failure, and clear "
                  "LLbit.  Ghidra stores unconditionally and never writes rd.")
    return sc


def _amswap_db_w(m: LoongArchView, w: int) -> None:
    """AMSWAP_DB.W rd, rk, rj: old = MEM[GR[rj]]:4; MEM[GR[rj]]:4 = GR[rk][31:0];
    GR[rd] = SignExtend(old, 64), with a full barrier (nothing to do on one CPU).  Ghidra
    zero-extends the old value (AMSWAP.W and the other AM*_DB.W sign-extend)."""
    addr, new = m.gr(_rj(w)), m.gr(_rk(w))
    old = m.load(addr, 4)
    m.store(addr, 4, new)
    m.set_gr(_rd(w), _sext32(old))


def _ldle_d(m: LoongArchView, w: int) -> None:
    """LDLE.D rd, rj, rk: if GR[rj] <= GR[rk] (unsigned, as Ghidra's LDLE.B/H/W and LDGT.*
    compare), GR[rd] = MEM[GR[rj]]:8, else a bound check exception.  Ghidra loads one byte
    and sign-extends it (LDLE.B's semantics)."""
    addr, bound = m.gr(_rj(w)), m.gr(_rk(w))
    if not bits.ule(addr, bound):
        where = bits.concrete(addr, "an ldle.d address")
        m.fault(f"bound check exception: ldle.d address {where:#x} above bound", where)
    m.set_gr(_rd(w), m.load(addr, 8))


def _movcf2gr(m: LoongArchView, w: int) -> None:
    """MOVCF2GR rd, cj: GR[rd] = ZeroExtend(FCC[cj], 64).  Ghidra keeps bits 63..1 of rd
    and only replaces bit 0."""
    m.set_gr(_rd(w), bits.zext(bits.and_(m.fcc(_imm(w, 5, 3)), 1, 8), 8, 64))


# ---------------------------------------------------------------------------------------
# CRC

_IEEE = 0xEDB88320
"""CRC-32 (IEEE 802.3), reflected."""
_C = 0x82F63B78
"""CRC-32C (Castagnoli), reflected."""


def _crc_update(crc: BV, msg: BV, nbits: int, poly: int) -> BV:
    """Feed ``nbits`` bits of ``msg`` (least significant first) into the reflected CRC-32
    register ``crc``, with no pre- or post-inversion."""
    crc = bits.wrap(crc, 32)
    for i in range(nbits):
        feedback = bits.xor(bits.extract(crc, 0, 0), bits.extract(msg, i, i), 1)
        crc = bits.xor(bits.lshr(crc, 1, 32), bits.ite(bits.eq(feedback, 1, 1), poly, 0, 32), 32)
    return crc


def _crc(nbytes: int, poly: int, name: str) -> OverrideFn:
    def crc(m: LoongArchView, w: int) -> None:
        msg = bits.wrap(m.gr(_rj(w)), 8 * nbytes)
        value = _crc_update(m.gr(_rk(w)), msg, 8 * nbytes, poly)
        m.set_gr(_rd(w), _sext32(value))

    crc.__doc__ = (f"{name} rd, rj, rk: GR[rd] = SignExtend(CRC32(GR[rk][31:0], "
                   f"GR[rj][{8 * nbytes - 1}:0], {8 * nbytes}), 64) with the reflected "
                   f"polynomial {poly:#x}.  Ghidra leaves it to an unimplemented CALLOTHER.")
    return crc


# ---------------------------------------------------------------------------------------
# The table

OVERRIDES: list[Override] = [
    Override("slli.d", "0000 0000 0100 0001 iiii iijj jjjd dddd", _slli_d),
    Override("srli.d", "0000 0000 0100 0101 iiii iijj jjjd dddd", _srli_d),
    Override("srai.d", "0000 0000 0100 1001 iiii iijj jjjd dddd", _srai_d),
    Override("rotr.w", "0000 0000 0001 1011 0kkk kkjj jjjd dddd", _rotr_w),
    Override("rotr.d", "0000 0000 0001 1011 1kkk kkjj jjjd dddd", _rotr_d),
    Override("rotri.w", "0000 0000 0100 1100 1iii iijj jjjd dddd", _rotri_w),
    Override("rotri.d", "0000 0000 0100 1101 iiii iijj jjjd dddd", _rotri_d),
    Override("bstrins.w", "0000 0000 011m mmmm 0lll lljj jjjd dddd", _bstrins_w),
    Override("bstrins.d", "0000 0000 10mm mmmm llll lljj jjjd dddd", _bstrins_d),
    Override("bytepick.w", "0000 0000 0000 100s skkk kkjj jjjd dddd", _bytepick_w),
    Override("bytepick.d", "0000 0000 0000 11ss skkk kkjj jjjd dddd", _bytepick_d),
    Override("revh.2w", "0000 0000 0000 0000 0100 00jj jjjd dddd", _revh_2w),
    Override("revh.d", "0000 0000 0000 0000 0100 01jj jjjd dddd", _revh_d),
    Override("ll.w", "0010 0000 iiii iiii iiii iijj jjjd dddd", _ll(4)),
    Override("sc.w", "0010 0001 iiii iiii iiii iijj jjjd dddd", _sc(4)),
    Override("ll.d", "0010 0010 iiii iiii iiii iijj jjjd dddd", _ll(8)),
    Override("sc.d", "0010 0011 iiii iiii iiii iijj jjjd dddd", _sc(8)),
    Override("ldle.d", "0011 1000 0111 1011 1kkk kkjj jjjd dddd", _ldle_d),
    Override("movcf2gr", "0000 0001 0001 0100 1101 1100 cccd dddd", _movcf2gr),
    Override("amswap_db.w", "0011 1000 0110 1001 0kkk kkjj jjjd dddd", _amswap_db_w),
    Override("crc.w.b.w", "0000 0000 0010 0100 0kkk kkjj jjjd dddd", _crc(1, _IEEE, "CRC.W.B.W")),
    Override("crc.w.h.w", "0000 0000 0010 0100 1kkk kkjj jjjd dddd", _crc(2, _IEEE, "CRC.W.H.W")),
    Override("crc.w.w.w", "0000 0000 0010 0101 0kkk kkjj jjjd dddd", _crc(4, _IEEE, "CRC.W.W.W")),
    Override("crc.w.d.w", "0000 0000 0010 0101 1kkk kkjj jjjd dddd", _crc(8, _IEEE, "CRC.W.D.W")),
    Override("crcc.w.b.w", "0000 0000 0010 0110 0kkk kkjj jjjd dddd", _crc(1, _C, "CRCC.W.B.W")),
    Override("crcc.w.h.w", "0000 0000 0010 0110 1kkk kkjj jjjd dddd", _crc(2, _C, "CRCC.W.H.W")),
    Override("crcc.w.w.w", "0000 0000 0010 0111 0kkk kkjj jjjd dddd", _crc(4, _C, "CRCC.W.W.W")),
    Override("crcc.w.d.w", "0000 0000 0010 0111 1kkk kkjj jjjd dddd", _crc(8, _C, "CRCC.W.D.W")),
]
"""Every LoongArch override, keyed by its bit pattern."""

_BY_TOP: dict[int, list[Override]] = {}
for _o in OVERRIDES:
    assert _o.mask >> 24 == 0xFF, _o.mnemonic  # the lookup below keys on the top byte
    _BY_TOP.setdefault(_o.match >> 24, []).append(_o)


def lookup(word: int) -> Override | None:
    """Return the override for instruction ``word``, or None to use Ghidra's P-code."""
    for o in _BY_TOP.get(word >> 24, ()):
        if word & o.mask == o.match:
            return o
    return None
