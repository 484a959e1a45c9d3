"""The word spaces of each ISA and how a sweep cuts them into shards.

aarch64 and loongarch64 have one space, every 32-bit word.  riscv64 has two: every 16-bit
halfword whose low two bits are not ``11`` (the compressed instructions) and every 32-bit
word whose low two bits are ``11``.  A shard is a range ``[lo, hi)`` of one space,
``shard_size`` words wide (a power of two, so shards are aligned and a rerun with the same
size finds the same shards); its name, ``<isa>-<width>-<lo>-<hi>``, keys its checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

from kprobe_ref.errors import InvalidProbeDefinition

__all__ = ["ISAS", "Shard", "parse_range", "plan", "space_widths"]

ISAS = ("aarch64", "riscv64", "loongarch64")
DEFAULT_SHARD = 1 << 22
"""Words per shard: about a minute of one core (50,000 to 100,000 words/s)."""


@dataclass(frozen=True, order=True)
class Shard:
    """The words ``lo <= w < hi`` of ``isa``'s ``width``-bit space."""

    isa: str
    width: int
    lo: int
    hi: int

    @property
    def name(self) -> str:
        """The checkpoint key."""
        return f"{self.isa}-{self.width}-{self.lo:08x}-{self.hi:08x}"

    @property
    def words(self) -> int:
        """How many words of the space the shard holds."""
        n = self.hi - self.lo
        if self.isa == "riscv64":
            return n // 4 if self.width == 32 else n - n // 4
        return n


def space_widths(isa: str) -> tuple[int, ...]:
    """The word widths of ``isa``'s spaces."""
    if isa not in ISAS:
        raise InvalidProbeDefinition(f"no sweep for ISA {isa!r} (known: {', '.join(ISAS)})")
    return (16, 32) if isa == "riscv64" else (32,)


def parse_range(text: str, width: int) -> tuple[int, int]:
    """``LO:HI`` (integers, hex with ``0x``) as a range of the ``width``-bit space."""
    lo_s, sep, hi_s = text.partition(":")
    try:
        lo, hi = int(lo_s, 0), int(hi_s, 0)
    except ValueError:
        lo = hi = -1
    if not sep or not 0 <= lo < hi <= 1 << width:
        raise InvalidProbeDefinition(
            f"--range {text!r}: expected LO:HI with 0 <= LO < HI <= {1 << width:#x}")
    return lo, hi


def plan(isa: str, width: int, lo: int, hi: int, shard_size: int = DEFAULT_SHARD) -> list[Shard]:
    """The shards covering ``[lo, hi)``, cut at multiples of ``shard_size``."""
    if shard_size < 1 or shard_size & (shard_size - 1):
        raise InvalidProbeDefinition(f"shard size {shard_size} is not a power of two")
    out = []
    a = lo
    while a < hi:
        b = min(hi, (a // shard_size + 1) * shard_size)
        out.append(Shard(isa, width, a, b))
        a = b
    return out
