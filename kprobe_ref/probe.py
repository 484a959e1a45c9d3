"""Probe descriptions (builders) and the handles registration returns.

The names mirror the seed crate: :class:`ProbeBuilder` describes a kprobe or uprobe,
:class:`KretprobeBuilder` a kretprobe or uretprobe.  A builder is inert; ``register_*``
validates it and returns a handle (:class:`Kprobe` or :class:`Kretprobe`).

Handlers are plain callables:

- pre, post, entry and return handlers: ``f(data, regs) -> bool | None``; ``data`` is the
  value given to ``with_data`` (``None`` if none).  A pre-handler returning ``True`` has set
  ``regs.pc`` itself: the probed instruction is skipped and later pre-handlers at that address
  do not run.  An entry handler returning ``True`` leaves this call's return unhooked.
- fault handlers: ``g(data, regs, error) -> bool | None``, called when a handler of the same
  probe raises, or when the out-of-line step faults.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Self

from kprobe_ref.ptregs import PtRegs

if TYPE_CHECKING:
    from kprobe_ref.point import ProbePoint

__all__ = [
    "FaultHandler",
    "Handler",
    "Kprobe",
    "KretprobeBuilder",
    "ProbeBuilder",
    "ProbeData",
]

ProbeData = Any
"""Any value a probe carries to its handlers (the seed's ``ProbeData`` trait object)."""
Handler = Callable[[ProbeData, PtRegs], "bool | None"]
FaultHandler = Callable[[ProbeData, PtRegs, BaseException], "bool | None"]


@dataclass(frozen=True)
class ProbeBuilder:
    """Describes a kprobe (or, with ``with_user_mode``, a uprobe)."""

    symbol_addr: int | None = None
    offset: int = 0
    pre_handler: Handler | None = None
    post_handler: Handler | None = None
    fault_handler: FaultHandler | None = None
    data: ProbeData = None
    enable: bool = True
    user_pid: int | None = None

    def with_symbol_addr(self, addr: int) -> Self:
        """Set the function (or base) address; the probe sits at ``addr + offset``."""
        return replace(self, symbol_addr=addr)

    def with_offset(self, offset: int) -> Self:
        """Set the offset from the symbol address."""
        return replace(self, offset=offset)

    def with_pre_handler(self, f: Handler) -> Self:
        """Run ``f`` before the probed instruction."""
        return replace(self, pre_handler=f)

    def with_post_handler(self, f: Handler) -> Self:
        """Run ``f`` after the probed instruction."""
        return replace(self, post_handler=f)

    def with_fault_handler(self, g: FaultHandler) -> Self:
        """Run ``g`` when a handler raises or the out-of-line step faults."""
        return replace(self, fault_handler=g)

    def with_data(self, data: ProbeData) -> Self:
        """Pass ``data`` to every handler."""
        return replace(self, data=data)

    def with_enable(self, enable: bool) -> Self:
        """Register enabled (the default) or disabled."""
        return replace(self, enable=enable)

    def with_user_mode(self, pid: int) -> Self:
        """Make it a uprobe in process ``pid``."""
        return replace(self, user_pid=pid)

    def address(self) -> int:
        """The probe address, ``symbol_addr + offset`` modulo ``2**64``."""
        from kprobe_ref.errors import InvalidProbeDefinition

        if self.symbol_addr is None:
            raise InvalidProbeDefinition("probe has no address: call with_symbol_addr()")
        if not isinstance(self.symbol_addr, int) or not isinstance(self.offset, int):
            raise InvalidProbeDefinition("symbol address and offset must be integers")
        return (self.symbol_addr + self.offset) & ((1 << 64) - 1)


@dataclass(frozen=True)
class KretprobeBuilder:
    """Describes a kretprobe (or, with ``with_user_mode``, a uretprobe)."""

    symbol_addr: int | None = None
    offset: int = 0
    entry_handler: Handler | None = None
    ret_handler: Handler | None = None
    data: ProbeData = None
    maxactive: int | None = None
    user_pid: int | None = None

    def with_symbol_addr(self, addr: int) -> Self:
        """Set the function's entry address."""
        return replace(self, symbol_addr=addr)

    def with_offset(self, offset: int) -> Self:
        """Set an offset from the symbol address (it must still be the function entry)."""
        return replace(self, offset=offset)

    def with_entry_handler(self, f: Handler) -> Self:
        """Run ``f`` at function entry with the instance's own copy of the data."""
        return replace(self, entry_handler=f)

    def with_ret_handler(self, f: Handler) -> Self:
        """Run ``f`` when the function returns, with the return registers."""
        return replace(self, ret_handler=f)

    def with_data(self, data: ProbeData) -> Self:
        """Give each instance a copy of ``data``."""
        return replace(self, data=data)

    def with_maxactive(self, n: int) -> Self:
        """Size the instance pool: at most ``n`` calls are hooked at once."""
        return replace(self, maxactive=n)

    def with_user_mode(self, pid: int) -> Self:
        """Make it a uretprobe in process ``pid``."""
        return replace(self, user_pid=pid)

    def address(self) -> int:
        """The probe address, ``symbol_addr + offset``."""
        return ProbeBuilder(symbol_addr=self.symbol_addr, offset=self.offset).address()


@dataclass(eq=False)
class Kprobe:
    """A registered kprobe or uprobe: the handle ``register_kprobe`` returns."""

    address: int
    pre_handler: Handler | None
    post_handler: Handler | None
    fault_handler: FaultHandler | None
    data: ProbeData
    user_pid: int | None
    enabled: bool = True
    nmissed: int = 0
    """Hits whose handlers did not run because the CPU was already inside a handler."""
    nhit: int = 0
    handler_errors: int = 0
    """Handler calls of this probe that raised (each also logged as a warning)."""
    registered: bool = False
    point: ProbePoint | None = field(default=None, repr=False)
    on_toggle: Callable[[Kprobe], None] | None = field(default=None, repr=False)

    def enable(self) -> None:
        """Enable the probe (its breakpoint returns to memory if it had left).  If the
        host fails to write the breakpoint, the probe stays disabled and the error
        propagates."""
        self._set_enabled(True)

    def disable(self) -> None:
        """Disable the probe; the breakpoint leaves memory when every probe there is off.
        If the host fails to restore the bytes, the probe stays enabled (its breakpoint in
        memory) and the error propagates."""
        self._set_enabled(False)

    def _set_enabled(self, on: bool) -> None:
        before = self.enabled
        self.enabled = on
        if self.on_toggle is None:
            return
        try:
            self.on_toggle(self)
        except BaseException:
            self.enabled = before
            raise

    def is_enabled(self) -> bool:
        """Tell whether the probe is enabled."""
        return self.enabled
