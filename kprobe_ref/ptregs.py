"""``PtRegs``: the register frame a trap hands to the probe engine.

Each ISA's frame mirrors that ISA's Linux ``struct pt_regs`` (see the ``regs`` module of each
ISA package for the field list).  Scalar fields are attributes; aarch64 and loongarch64 keep
their general registers in a list ``regs`` as Linux does.  All values are unsigned 64-bit
integers: writing an attribute stores the value modulo ``2**64``.

Every frame also offers the ISA-neutral accessors the engine and handlers use: ``pc`` and
``sp`` (read and write), :meth:`first_ret_value`, :meth:`second_ret_value` and
:meth:`arg`.  Registers can be reached by their architectural name with :meth:`get` and
:meth:`set` (``"rax"``, ``"x5"``, ``"a0"``, ``"r12"``), which is how the machine moves a
frame in and out of a CPU.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar, Self

__all__ = ["PtRegs"]

_MASK64 = (1 << 64) - 1


class PtRegs:
    """Base class of the per-ISA register frames."""

    ISA: ClassVar[str] = ""
    FIELDS: ClassVar[tuple[str, ...]] = ()
    """Scalar fields in ``pt_regs`` order."""
    GPR_COUNT: ClassVar[int] = 0
    """Length of the ``regs`` list (0 when the ISA names every register as a field)."""
    ALIASES: ClassVar[dict[str, str]] = {}
    """Architectural register name -> field name (``"x5"`` -> ``"regs[5]"``, ``"a0"`` ->
    ``"a0"``)."""
    ZERO: ClassVar[str | None] = None
    """The name of the hard-wired zero register, if the ISA has one (reads 0, ignores writes)."""
    PC: ClassVar[str] = "pc"
    SP: ClassVar[str] = "sp"
    RET: ClassVar[tuple[str, str]] = ("", "")
    ARGS: ClassVar[tuple[str, ...]] = ()
    regs: list[int]
    """The general registers, on ISAs whose ``pt_regs`` keeps them in an array."""

    def __init__(self, **values: int) -> None:
        for name in self.FIELDS:
            self.__dict__[name] = 0
        if self.GPR_COUNT:
            self.__dict__["regs"] = [0] * self.GPR_COUNT
        for name, value in values.items():
            self.set(name, value)

    def __setattr__(self, name: str, value: object) -> None:
        # Fields live in the instance dictionary, so a field named like an accessor
        # (riscv ``sp``, aarch64 ``pc``) never recurses through the property.
        if name in self.FIELDS and isinstance(value, int):
            self.__dict__[name] = value & _MASK64
        elif name in self.FIELDS or name == "regs":
            self.__dict__[name] = value
        else:
            object.__setattr__(self, name, value)

    # -- named access -----------------------------------------------------------------
    def __init_subclass__(cls, **kw: object) -> None:
        super().__init_subclass__(**kw)
        cls._RESOLVED = {}

    _RESOLVED: ClassVar[dict[str, tuple[str, int | None]]] = {}
    """Name -> slot, filled on first use (the frame layout never changes)."""

    def _resolve(self, name: str) -> tuple[str, int | None]:
        got = self._RESOLVED.get(name)
        if got is None:
            got = self._RESOLVED[name] = self._resolve_slot(name)
        return got

    def _resolve_slot(self, name: str) -> tuple[str, int | None]:
        target = self.ALIASES.get(name, name)
        if target.startswith("regs[") and self.GPR_COUNT:
            return "regs", int(target[5:-1])
        if target in self.FIELDS:
            return target, None
        raise KeyError(f"{self.ISA} pt_regs has no register {name!r}")

    def get(self, name: str) -> int:
        """Return a register by field name or architectural name."""
        field, index = self._resolve(name)
        if index is None:
            scalar: int = self.__dict__[field]
            return scalar
        value: int = self.__dict__[field][index]
        return value

    def set(self, name: str, value: int) -> None:
        """Set a register by field name or architectural name (modulo ``2**64``)."""
        field, index = self._resolve(name)
        if index is None:
            self.__dict__[field] = value & _MASK64
        else:
            self.__dict__[field][index] = value & _MASK64

    def names(self) -> Iterator[str]:
        """Yield every register slot's canonical name: ``regs[i]`` entries, then fields."""
        for i in range(self.GPR_COUNT):
            yield f"regs[{i}]"
        yield from self.FIELDS

    def _get_slot(self, slot: str) -> int:
        if slot.startswith("regs["):
            value: int = self.regs[int(slot[5:-1])]
            return value
        return int(self.__dict__[slot])

    # -- ISA-neutral accessors ----------------------------------------------------------
    @property
    def pc(self) -> int:
        """The program counter (x86_64 ``rip``, loongarch64 ``csr_era``, riscv64 ``epc``),
        a scalar field on every ISA."""
        value: int = self.__dict__[self.PC]
        return value

    @pc.setter
    def pc(self, value: int) -> None:
        self.__dict__[self.PC] = value & _MASK64

    @property
    def sp(self) -> int:
        """The stack pointer."""
        return self.get(self.SP)

    @sp.setter
    def sp(self, value: int) -> None:
        self.set(self.SP, value)

    def first_ret_value(self) -> int:
        """The first integer return register of the ISA's C calling convention."""
        return self.get(self.RET[0])

    def second_ret_value(self) -> int:
        """The second integer return register of the ISA's C calling convention."""
        return self.get(self.RET[1])

    def arg(self, n: int) -> int:
        """The ``n``-th (from 0) integer argument passed in a register at function entry."""
        if not 0 <= n < len(self.ARGS):
            raise IndexError(f"{self.ISA} passes {len(self.ARGS)} integer arguments in registers")
        return self.get(self.ARGS[n])

    # -- value semantics ----------------------------------------------------------------
    def as_dict(self) -> dict[str, int]:
        """Return every register slot by canonical name."""
        return {slot: self._get_slot(slot) for slot in self.names()}

    def copy(self) -> Self:
        """Return an independent copy."""
        other = type(self)()
        other.restore_from(self)
        return other

    def restore_from(self, other: PtRegs) -> None:
        """Overwrite every register with ``other``'s value."""
        for name in self.FIELDS:
            self.__dict__[name] = other.__dict__[name]
        if self.GPR_COUNT:
            self.__dict__["regs"] = list(other.__dict__["regs"])

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.as_dict() == other.as_dict()

    def __hash__(self) -> int:
        return hash(tuple(self.as_dict().items()))

    def __repr__(self) -> str:
        body = " ".join(f"{k}={v:#x}" for k, v in self.as_dict().items())
        return f"<{type(self).__name__} {body}>"
