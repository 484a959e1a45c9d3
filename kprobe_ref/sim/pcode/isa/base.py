"""The record of one ISA: everything the P-code CPU does differently per ISA.

The CPU, the compiler and the operation semantics are ISA-neutral; each module of
:mod:`kprobe_ref.sim.pcode.isa` fills one :class:`IsaRecord` with what Ghidra's P-code does
not carry or names its own way: the SLEIGH language, the architectural register names,
the division rule, the user-defined operations, the hard-wired zero register, the name of
the program counter, registers SLEIGH spreads over flag bytes, and the instructions whose
P-code is replaced (:mod:`kprobe_ref.sim.pcode.overrides`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from kprobe_ref import bits
from kprobe_ref.sim.pcode.ops import CallOther, DivRule
from kprobe_ref.sim.pcode.state import State, Vn

__all__ = [
    "BARRIER",
    "HINT",
    "CpuAccess",
    "IsaRecord",
    "OverrideHook",
    "PackedRegister",
    "RegisterMap",
    "Replacement",
    "same_rule",
]


BARRIER = "one CPU, sequentially consistent memory: ordering is already total"
"""Why a memory barrier CALLOTHER does nothing."""
HINT = "a performance hint with no architectural effect"
"""Why a hint CALLOTHER does nothing."""


class CpuAccess(Protocol):
    """What an ISA's override view uses of the CPU: the value store, the architectural
    register map and the ``ll``/``sc`` reservation."""

    reservation: int | None

    @property
    def state(self) -> State:
        """The value store the instructions run on."""

    @property
    def regmap(self) -> Mapping[str, Vn]:
        """Architectural register names mapped to SLEIGH varnodes."""


Replacement = tuple[str, Callable[[], None]]
"""An instruction whose P-code is replaced: its mnemonic and its whole effect."""

OverrideHook = Callable[[CpuAccess, int], Replacement | None]
"""Given the CPU and a 32-bit instruction word, the replacement, or None to run Ghidra's
P-code."""

RegisterMap = Callable[[Callable[[str], Vn]], dict[str, Vn]]
"""Given the varnode of each SLEIGH register name, the architectural register map."""


def same_rule(rule: DivRule) -> Callable[[str], DivRule]:
    """A division chooser that gives ``rule`` for every instruction."""
    return lambda mnemonic: rule


@dataclass(frozen=True)
class PackedRegister:
    """An architectural register that SLEIGH spreads over one-byte flag registers.

    ``fields`` maps each SLEIGH register to its lowest bit and width in the architectural
    register; bits in ``reads_as_one`` always read as 1; with ``keeps_rest`` the bits no
    field covers are kept aside on a write and read back, otherwise they read as 0."""

    name: str
    fields: Mapping[str, tuple[int, int]]
    reads_as_one: int = 0
    keeps_rest: bool = False

    def compose(self, read: Callable[[str], int], rest: int) -> int:
        """The register's value from the flag bytes (``read``) and the kept-aside bits."""
        value = rest | self.reads_as_one
        for reg, (lo, width) in self.fields.items():
            value |= (read(reg) & bits.mask(width)) << lo
        return value

    def spread(self, value: int, write: Callable[[str, int], None]) -> int:
        """Write ``value`` to the flag bytes and return the bits to keep aside."""
        known = 0
        for reg, (lo, width) in self.fields.items():
            write(reg, (value >> lo) & bits.mask(width))
            known |= bits.mask(width) << lo
        return value & ~known & bits.mask(64) if self.keeps_rest else 0


@dataclass(frozen=True)
class IsaRecord:
    """Everything ISA-specific about running one ISA's P-code.

    - ``language``: the SLEIGH language id;
    - ``pc``: the architectural name of the program counter (a key of the register map);
    - ``registers``: builds the architectural register map from the SLEIGH registers;
    - ``callothers``: every CALLOTHER implemented, by name (others stop with a FAULT);
    - ``division``: the division rule for an instruction of a given mnemonic;
    - ``zero_register``: the SLEIGH name of a hard-wired zero register (writes dropped);
    - ``indirect_mask``: ANDed into every indirect branch target;
    - ``packed``: registers composed from SLEIGH flag bytes;
    - ``override``: replaces the P-code of some 32-bit instruction words.
    """

    name: str
    language: str
    pc: str
    registers: RegisterMap
    callothers: Mapping[str, CallOther]
    division: Callable[[str], DivRule]
    zero_register: str | None = None
    indirect_mask: int | None = None
    packed: tuple[PackedRegister, ...] = field(default=())
    override: OverrideHook | None = None
