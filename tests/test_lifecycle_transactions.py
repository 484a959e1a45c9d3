"""Lifecycle operations are all or nothing: the host fails its k-th write (for every k) while
a kprobe, kretprobe, uprobe or uretprobe is registered, unregistered, enabled or disabled,
on every ISA.  The failing operation raises the host's error and leaves code bytes, points,
both trap tables, slots, the pool of a return probe and the handle exactly as before; the
same operation then succeeds, and removing every probe restores the image byte for byte."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from kprobe_ref import (
    KretprobeBuilder,
    ProbeBuilder,
    register_kprobe,
    register_kretprobe,
    register_uprobe,
    register_uretprobe,
    unregister_kprobe,
    unregister_kretprobe,
    unregister_uprobe,
    unregister_uretprobe,
)
from kprobe_ref.arch import Verdict
from kprobe_ref.manager import check_probe, instruction_starts
from kprobe_ref.sim import Machine
from kprobe_ref.sim.space import AddressSpace
from kprobe_ref.tools.verify import bundled_image

ISAS = ("x86_64", "aarch64", "riscv64", "loongarch64")
FUNCTION = "adler32"
KINDS = ("kprobe-step", "kprobe-sim", "kprobe-shared", "kretprobe", "uprobe", "uretprobe")
OPS = ("register", "unregister", "enable", "disable")


class HostFailure(Exception):
    """The injected failure of a host write."""


@dataclass
class FailingHost:
    """Counts the host's write events on a machine and fails the ``fail_at``-th one.

    Events: entering ``set_writeable_for_address``, each ``write_memory``, and leaving
    ``set_writeable_for_address`` after its write (a failure restoring permissions)."""

    m: Machine
    fail_at: int | None = None
    count: int = 0
    real: dict[str, Callable[..., Any]] = field(default_factory=dict)

    def install(self) -> None:
        self.real = {"write": self.m.write_memory, "window": self.m.set_writeable_for_address}
        self.m.write_memory = self._write  # type: ignore[method-assign]
        self.m.set_writeable_for_address = self._window  # type: ignore[method-assign]

    def _event(self) -> None:
        self.count += 1
        if self.fail_at is not None and self.count == self.fail_at:
            raise HostFailure(f"host write event {self.count} fails")

    def _write(self, addr: int, data: bytes, pid: int | None) -> None:
        self._event()
        self.real["write"](addr, data, pid)

    def _window(self, addr: int, size: int, pid: int | None,
                action: Callable[[], None]) -> None:
        self._event()
        self.real["window"](addr, size, pid, action)
        self._event()


@dataclass
class Setup:
    """A fresh machine with the image, a process, and the handle the operation acts on."""

    m: Machine
    host: FailingHost
    kind: str
    pid: int | None
    addr: int
    start: int
    size: int
    original: bytes
    handle: Any = None
    others: list[Any] = field(default_factory=list)

    @property
    def space(self) -> AddressSpace:
        return self.m.kernel if self.pid is None else self.m.process(self.pid).space

    @property
    def tables(self) -> tuple[Any, Any]:
        if self.pid is None:
            return self.m.manager, self.m.points
        proc = self.m.process(self.pid)
        return proc.manager, proc.points


def _site(m: Machine, pid: int | None, start: int, size: int, verdict: Verdict) -> int:
    space = m.kernel if pid is None else m.process(pid).space
    mgr, points = (m.manager, m.points) if pid is None else (
        m.process(pid).manager, m.process(pid).points)
    code = space.read(start, size)
    if m.arch.variable_length:
        starts = instruction_starts(m.isa, start, code)[0]
    else:
        starts = tuple(range(start, start + size, m.arch.insn_align))
    for a in starts[1:]:
        if check_probe(mgr, points, a).decoded.verdict is verdict:
            return a
    raise AssertionError(f"no {verdict} site in {FUNCTION}")


def _setup(isa: str, kind: str) -> Setup:
    m = Machine(isa, strict=True)
    image = m.load_elf(bundled_image(isa))
    pid = m.spawn(bundled_image(isa, "user"))
    user = kind.startswith("u")
    where = pid if user else None
    start = (m.process(pid).image if user else image).functions[FUNCTION]
    size = (m.process(pid).image if user else image).sizes[FUNCTION]
    if kind in ("kretprobe", "uretprobe"):
        addr = start
    elif kind == "kprobe-sim":
        addr = _site(m, where, start, size, Verdict.SIMULATE)
    else:
        addr = _site(m, where, start, size, Verdict.STEP_OUT_OF_LINE)
    host = FailingHost(m)
    host.install()
    s = Setup(m, host, kind, where, addr, start, size, b"")
    s.original = s.space.read(start, size)
    if kind == "kprobe-shared":
        s.others.append(_register(s, enabled=False))
    return s


def _register(s: Setup, enabled: bool = True) -> Any:
    mgr, points = s.tables
    if s.kind in ("kretprobe", "uretprobe"):
        rb = KretprobeBuilder().with_symbol_addr(s.addr).with_maxactive(2)
        if s.pid is not None:
            h = register_uretprobe(mgr, points, rb.with_user_mode(s.pid))
        else:
            h = register_kretprobe(mgr, points, rb)
        if not enabled:
            h.disable()
        return h
    b = ProbeBuilder().with_symbol_addr(s.addr).with_enable(enabled)
    if s.pid is not None:
        return register_uprobe(mgr, points, b.with_user_mode(s.pid))
    return register_kprobe(mgr, points, b)


def _unregister(s: Setup, h: Any) -> None:
    mgr, points = s.tables
    if s.kind == "kretprobe":
        unregister_kretprobe(mgr, points, h)
    elif s.kind == "uretprobe":
        unregister_uretprobe(mgr, points, h)
    elif s.kind == "uprobe":
        unregister_uprobe(mgr, points, h)
    else:
        unregister_kprobe(mgr, points, h)


def _prepare(s: Setup, op: str) -> None:
    if op != "register":
        s.handle = _register(s, enabled=op != "enable")


def _perform(s: Setup, op: str) -> None:
    if op == "register":
        s.handle = _register(s)
    elif op == "unregister":
        _unregister(s, s.handle)
    elif op == "enable":
        s.handle.enable()
    else:
        s.handle.disable()


def _snapshot(s: Setup) -> tuple[object, ...]:
    mgr, points = s.tables
    used = sorted((a.base, tuple(sorted(a.used))) for a in s.space.exec_areas if a.used)
    handles = [h for h in [s.handle, *s.others] if h is not None]
    return (
        s.space.read(s.start, s.size),
        dict(points),
        dict(mgr.break_list),
        dict(mgr.debug_list),
        used,
        mgr.rethooks is not None,
        [(h.registered, h.is_enabled(), len(getattr(h, "free", ()))) for h in handles],
        [(p.armed, list(p.probes), p.slot_addr) for p in points.values()],
        list(mgr.ctl_stack()),
    )


def _teardown(s: Setup) -> None:
    for h in [s.handle, *s.others]:
        if h is not None and h.registered:
            _unregister(s, h)
    mgr, points = s.tables
    assert s.space.read(s.start, s.size) == s.original
    assert not points and not mgr.break_list and not mgr.debug_list
    trampoline = {mgr.rethooks.trampoline} if mgr.rethooks is not None else set()
    assert {u for a in s.space.exec_areas for u in a.used} == trampoline


def _events(isa: str, kind: str, op: str) -> int:
    s = _setup(isa, kind)
    _prepare(s, op)
    s.host.count = 0
    _perform(s, op)
    return s.host.count


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("op", OPS)
def test_failing_the_kth_host_write_changes_nothing(isa: str, kind: str, op: str) -> None:
    events = _events(isa, kind, op)
    assert events >= 1
    for k in range(1, events + 1):
        s = _setup(isa, kind)
        _prepare(s, op)
        before = _snapshot(s)
        s.host.count, s.host.fail_at = 0, k
        with pytest.raises(HostFailure):
            _perform(s, op)
        s.host.fail_at = None
        assert _snapshot(s) == before, f"{op} {kind} left changes when write {k} failed"
        _perform(s, op)
        _teardown(s)


@pytest.mark.parametrize("isa", ISAS)
def test_a_probe_whose_disarm_failed_stays_removable(isa: str) -> None:
    s = _setup(isa, "kprobe-step")
    s.handle = _register(s)
    s.host.count, s.host.fail_at = 0, 1
    with pytest.raises(HostFailure):
        _unregister(s, s.handle)
    assert s.handle.registered and s.space.read(s.addr, 1) != s.original[s.addr - s.start:][:1]
    s.host.fail_at = None
    _unregister(s, s.handle)
    _teardown(s)
