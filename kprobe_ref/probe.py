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
- event callbacks (the seed's ``register_event_callback``): ``f(regs) -> None``, kept on
  the handle by an integer id (registering an id again replaces its callback) and run in
  ascending id order.  A kprobe's run when its step completes, after its post handler,
  only while it is enabled and only on hits whose handlers run (not on a reentrant hit,
  nor when a pre-handler skipped the instruction); a kretprobe's run at the function's
  return, after its return handler.  A callback that raises is reported like a failing
  handler.

A probe is placed by address (``with_symbol_addr``) or by name (``with_symbol``, resolved
at registration by the host's ``lookup_symbol``, Linux's ``kallsyms_lookup_name``), plus
``with_offset``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Self

from kprobe_ref.ptregs import PtRegs

if TYPE_CHECKING:
    from kprobe_ref.point import ProbePoint

__all__ = [
    "EventCallback",
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
EventCallback = Callable[[PtRegs], None]


def _callback_args(id_or_callback: int | EventCallback, callback: EventCallback | None
                   ) -> tuple[int, EventCallback]:
    """``with_event_callback(f)`` (id 0) or ``with_event_callback(id, f)``."""
    if callback is None:
        if isinstance(id_or_callback, int):
            from kprobe_ref.errors import InvalidProbeDefinition

            raise InvalidProbeDefinition("with_event_callback(id, callback) needs a callback")
        return 0, id_or_callback
    if not isinstance(id_or_callback, int):
        from kprobe_ref.errors import InvalidProbeDefinition

        raise InvalidProbeDefinition("an event callback id is an integer")
    return id_or_callback, callback


class EventCallbacks:
    """The seed's event callbacks of one handle, by id."""

    def __init__(self) -> None:
        self._callbacks: dict[int, EventCallback] = {}

    def register(self, callback_id: int, callback: EventCallback) -> None:
        """Keep ``callback`` under ``callback_id`` (replacing any callback of that id)."""
        from kprobe_ref.errors import InvalidProbeDefinition

        if not isinstance(callback_id, int) or isinstance(callback_id, bool):
            raise InvalidProbeDefinition(f"event callback id must be an integer, got "
                                         f"{callback_id!r}")
        if not callable(callback):
            raise InvalidProbeDefinition("event callback must be callable")
        self._callbacks[callback_id] = callback

    def unregister(self, callback_id: int) -> None:
        """Drop the callback of ``callback_id``; an unknown id is ``NotRegistered``."""
        from kprobe_ref.errors import NotRegistered

        if callback_id not in self._callbacks:
            raise NotRegistered(f"no event callback with id {callback_id!r}")
        del self._callbacks[callback_id]

    def ordered(self) -> list[EventCallback]:
        """The callbacks in ascending id order."""
        return [self._callbacks[i] for i in sorted(self._callbacks)]

    def get(self, callback_id: int) -> EventCallback | None:
        """The callback registered under ``callback_id``, if any."""
        if not isinstance(callback_id, int):
            return None
        return self._callbacks.get(callback_id)

    def restore(self, callback_id: int, callback: EventCallback | None) -> None:
        """Put back what :meth:`get` returned (``None``: no callback under that id)."""
        if callback is None:
            self._callbacks.pop(callback_id, None)
        else:
            self._callbacks[callback_id] = callback

    def __bool__(self) -> bool:
        return bool(self._callbacks)


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
    symbol: str | None = None
    event_callbacks: tuple[tuple[int, EventCallback], ...] = ()

    def with_symbol_addr(self, addr: int) -> Self:
        """Set the function (or base) address; the probe sits at ``addr + offset``."""
        return replace(self, symbol_addr=addr)

    def with_symbol(self, name: str) -> Self:
        """Place the probe at the symbol ``name`` (plus the offset), resolved by the host
        when the probe is registered; an unknown or ambiguous name is refused then."""
        return replace(self, symbol=name)

    def with_event_callback(self, id_or_callback: int | EventCallback,
                            callback: EventCallback | None = None) -> Self:
        """Register an event callback along with the probe: ``(id, f)``, or ``(f)`` for
        id 0."""
        cid, f = _callback_args(id_or_callback, callback)
        return replace(self, event_callbacks=(*self.event_callbacks, (cid, f)))

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
    symbol: str | None = None
    event_callbacks: tuple[tuple[int, EventCallback], ...] = ()

    def with_symbol_addr(self, addr: int) -> Self:
        """Set the function's entry address."""
        return replace(self, symbol_addr=addr)

    def with_symbol(self, name: str) -> Self:
        """Place the return probe at the function called ``name`` (resolved by the host
        when it is registered)."""
        return replace(self, symbol=name)

    def with_event_callback(self, id_or_callback: int | EventCallback,
                            callback: EventCallback | None = None) -> Self:
        """Register an event callback (run at each hooked return, after the return
        handler) along with the probe: ``(id, f)``, or ``(f)`` for id 0."""
        cid, f = _callback_args(id_or_callback, callback)
        return replace(self, event_callbacks=(*self.event_callbacks, (cid, f)))

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

    def as_probe(self) -> ProbeBuilder:
        """Where this return probe goes, as a kprobe description."""
        return ProbeBuilder(symbol_addr=self.symbol_addr, offset=self.offset,
                            symbol=self.symbol, user_pid=self.user_pid)


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
    callbacks: EventCallbacks = field(default_factory=EventCallbacks, repr=False)

    @property
    def ftrace(self) -> bool:
        """Whether the probe goes through ftrace (its address is an ftrace site of a kernel
        with kprobes on ftrace: no breakpoint, no trap, see :mod:`kprobe_ref.ftrace`)."""
        return self.point is not None and self.point.ftrace

    def register_event_callback(self, callback_id: int, callback: EventCallback) -> None:
        """Run ``callback(regs)`` at every hit whose step completes (the seed's event
        callbacks); an id already in use has its callback replaced."""
        previous = self.callbacks.get(callback_id)
        self.callbacks.register(callback_id, callback)
        self._changed(lambda: self.callbacks.restore(callback_id, previous))

    def unregister_event_callback(self, callback_id: int) -> None:
        """Remove the event callback ``callback_id`` (``NotRegistered`` if none)."""
        previous = self.callbacks.get(callback_id)
        self.callbacks.unregister(callback_id)
        self._changed(lambda: self.callbacks.restore(callback_id, previous))

    def _changed(self, undo: Callable[[], None]) -> None:
        """Tell the engine that what the probe needs at a hit changed (an optimized point
        must go back to a breakpoint before a probe gains an event callback); if that
        fails, ``undo`` the change and re-raise."""
        if self.on_toggle is None:
            return
        try:
            self.on_toggle(self)
        except BaseException:
            undo()
            raise

    @property
    def optimized(self) -> bool:
        """Whether the probe is registered at a point that is jump-optimized now
        (``docs/optprobes.md``): its hits take no trap."""
        return self.registered and self.point is not None and self.point.opt is not None

    def event_callbacks(self) -> list[EventCallback]:
        """The event callbacks in the order they run (ascending id)."""
        return self.callbacks.ordered()

    def has_event_callbacks(self) -> bool:
        """Whether any event callback is registered (such a probe needs the end-of-step
        trap: it cannot be boosted)."""
        return bool(self.callbacks)

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
