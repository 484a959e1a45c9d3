"""Moving a trap frame between a CPU backend and the engine, lazily.

A trap needs the PC; most traps need nothing else (a probe without handlers, a boosted
step, a missed hit), and reading and writing every register of the CPU on every trap was
most of a trap's cost.  :func:`trap_frame` gives the engine a ``pt_regs`` frame of the
ISA's own class whose PC is set and whose other registers are read from the CPU, all in
one batched read, the first time anything but the PC is touched.  :func:`write_back`
writes the PC if it changed and, if the registers were read, only those whose value
changed.

The frame is an instance of a subclass of the ISA's frame class (:func:`lazy_class`):
``isinstance`` checks, ``get``/``set``, attribute access (``regs.rax``, ``regs.regs[5]``),
``copy`` and ``restore_from`` behave as on an eager frame.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kprobe_ref.ptregs import PtRegs

__all__ = ["FrameLayout", "lazy_class", "trap_frame", "write_back"]

_MASK64 = (1 << 64) - 1

Loader = Callable[[], Sequence[int]]


class FrameLayout:
    """Where each CPU register of an ISA goes in its frame: ``(field, index)`` pairs in the
    order of ``cpu_names``; ``index`` is ``None`` for a scalar field."""

    def __init__(self, regs_class: type[PtRegs], cpu_regs: Mapping[str, str]) -> None:
        probe = regs_class()
        self.regs_class = regs_class
        self.cpu_names: tuple[str, ...] = tuple(cpu_regs.values())
        self.slots: tuple[tuple[str, int | None], ...] = tuple(
            probe._resolve(name) for name in cpu_regs)
        pc_slot = probe._resolve(regs_class.PC)
        self.pc_position = self.slots.index(pc_slot)
        self.pc_cpu_name = self.cpu_names[self.pc_position]
        self.lazy = lazy_class(regs_class)
        """The lazy frame class of :func:`trap_frame`."""

    def values(self, frame: PtRegs) -> list[int]:
        """The frame's value for each CPU register, in ``cpu_names`` order."""
        d = frame.__dict__
        return [d[f] if i is None else d[f][i] for f, i in self.slots]

    def fill(self, frame: PtRegs, values: Sequence[int]) -> None:
        """Store CPU register values into the frame's slots."""
        d = frame.__dict__
        for (f, i), v in zip(self.slots, values, strict=True):
            if i is None:
                d[f] = v & _MASK64
            else:
                d[f][i] = v & _MASK64


_LAZY: dict[type[PtRegs], type[PtRegs]] = {}


def lazy_class(regs_class: type[PtRegs]) -> type[PtRegs]:
    """The lazy variant of an ISA's frame class (one per class)."""
    got = _LAZY.get(regs_class)
    if got is None:
        got = _LAZY[regs_class] = _make_lazy(regs_class)
    return got


def _make_lazy(regs_class: type[PtRegs]) -> type[PtRegs]:

    class LazyFrame(regs_class):  # type: ignore[valid-type,misc]
        __doc__ = f"A {regs_class.__name__} read from the CPU on first use."

        def __init__(self, pc: int, loader: Loader, layout: FrameLayout) -> None:
            d = self.__dict__
            d["_loader"], d["_layout"], d["_loaded"] = loader, layout, None
            d[regs_class.PC] = pc & _MASK64

        def _load(self) -> None:
            d = self.__dict__
            if d["_loaded"] is not None:
                return
            pc = d[regs_class.PC]
            for name in regs_class.FIELDS:
                d[name] = 0
            if regs_class.GPR_COUNT:
                d["regs"] = [0] * regs_class.GPR_COUNT
            values = list(d["_loader"]())
            layout: FrameLayout = d["_layout"]
            layout.fill(self, values)
            d[regs_class.PC] = pc
            d["_loaded"] = layout.values(self)

        def __getattr__(self, name: str) -> Any:
            if name.startswith("_") or name in self.__dict__:
                raise AttributeError(name)
            self._load()
            return self.__dict__[name] if name in self.__dict__ else object.__getattribute__(
                self, name)

        def __setattr__(self, name: str, value: object) -> None:
            if name == "pc" or name == regs_class.PC:  # never needs the other registers
                self.__dict__[regs_class.PC] = value & _MASK64  # type: ignore[operator]
                return
            if name in regs_class.FIELDS or name == "regs":
                self._load()
            super().__setattr__(name, value)

        def get(self, name: str) -> int:
            if name != regs_class.PC:
                self._load()
            return super().get(name)  # type: ignore[no-any-return]

        def set(self, name: str, value: int) -> None:
            if name != regs_class.PC:
                self._load()
            super().set(name, value)

        @property
        def sp(self) -> int:
            return self.get(regs_class.SP)

        @sp.setter
        def sp(self, value: int) -> None:
            self.set(regs_class.SP, value)

        def _get_slot(self, slot: str) -> int:
            self._load()
            return super()._get_slot(slot)  # type: ignore[no-any-return]

        def restore_from(self, other: PtRegs) -> None:
            d = self.__dict__
            if isinstance(other, LazyFrame) and other.__dict__["_loaded"] is None:
                # Back to what the CPU holds: forget every change, reread on next use.
                for name in (*regs_class.FIELDS, "regs"):
                    d.pop(name, None)
                d["_loaded"], d[regs_class.PC] = None, other.__dict__[regs_class.PC]
                return
            self._load()
            if isinstance(other, LazyFrame):
                other._load()
            super().restore_from(other)

        def copy(self) -> Any:
            d = self.__dict__
            if d["_loaded"] is None:  # nothing read or changed yet: a copy need not read
                return LazyFrame(d[regs_class.PC], d["_loader"], d["_layout"])
            plain = regs_class()
            plain.restore_from(self)
            return plain

        def __eq__(self, other: object) -> bool:
            return isinstance(other, PtRegs) and other.ISA == self.ISA and \
                self.as_dict() == other.as_dict()

        def __hash__(self) -> int:
            return hash(tuple(self.as_dict().items()))

    LazyFrame.__name__ = LazyFrame.__qualname__ = f"Lazy{regs_class.__name__}"
    return LazyFrame


def trap_frame(layout: FrameLayout, pc: int, loader: Loader) -> PtRegs:
    """A frame whose PC is ``pc`` and whose other registers ``loader`` reads on first use
    (``loader`` returns the CPU registers in ``layout.cpu_names`` order)."""
    make: Any = layout.lazy
    frame: PtRegs = make(pc, loader, layout)
    return frame


def write_back(layout: FrameLayout, frame: PtRegs,
               write: Callable[[Sequence[tuple[str, int]]], None]) -> None:
    """Write every register the engine changed in a frame from :func:`trap_frame`, the PC
    excepted: the machine resumes the CPU at the frame's PC itself."""
    before = frame.__dict__["_loaded"]
    if before is None:
        return
    after = layout.values(frame)
    skip = layout.pc_position
    changed = [(layout.cpu_names[i], v) for i, v in enumerate(after)
               if v != before[i] and i != skip]
    if changed:
        write(changed)
