"""Probe points: one patched instruction shared by every probe at its address.

A :class:`ProbePoint` owns the original instruction bytes, the decoded verdict, the
breakpoint and (for stepped instructions) the out-of-line slot.  Several probes at one
address share one point; the breakpoint is in memory while at least one of them is enabled,
and the original bytes come back when the last probe goes (``unregister``) or the last
enabled one is disabled.  A point whose last probe left while a CPU was handling it (in a
handler, or stepping its slot) is
*retired*: its slot stays until that CPU is done with it.

A point may also be *optimized* (``docs/optprobes.md``): its breakpoint has been replaced by
a jump over a region of whole instructions to a detour buffer (:class:`Optimized`).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field

from kprobe_ref.arch.base import Decoded, OptPlan, SlotPlan
from kprobe_ref.probe import Kprobe

__all__ = ["Optimized", "ProbePoint", "ProbePointList", "overlay_original"]


@dataclass(frozen=True)
class Optimized:
    """The jump of an optimized point: where its detour buffer lies, the plan written
    there, and the original bytes of the region the jump covers."""

    detour: int
    plan: OptPlan
    original: bytes


@dataclass(eq=False)
class ProbePoint:
    """One probed instruction."""

    address: int
    pid: int | None
    original: bytes
    """The whole original instruction."""
    decoded: Decoded
    breakpoint: bytes
    slot_addr: int | None = None
    plan: SlotPlan | None = None
    boost_addr: int | None = None
    """Where the slot's boosted variant lies (``None`` when the point has none)."""
    boost_plan: SlotPlan | None = None
    probes: list[Kprobe] = field(default_factory=list)
    armed: bool = False
    retired: bool = False
    opt: Optimized | None = None
    """The jump to the detour buffer, while the point is optimized."""
    busy: int = 0
    """CPUs handling this point: from its breakpoint trap until its handlers and its step
    are done.  A retired point's slot is freed when this drops to zero."""
    ftrace: bool = False
    """A kprobe on an ftrace site (:mod:`kprobe_ref.ftrace`): ``breakpoint`` is the call to
    the ftrace trampoline, ``original`` the whole NOP area, and there is no slot."""

    @property
    def step_break_addr(self) -> int | None:
        """Address of the slot's end-of-step breakpoint (``None`` without a slot)."""
        if self.slot_addr is None or self.plan is None:
            return None
        return self.slot_addr + self.plan.break_offset

    def written(self) -> tuple[bytes, bytes] | None:
        """What the point has written over the code: ``(written bytes, original bytes
        under them)``, or ``None`` when the code is as it was."""
        if self.opt is not None:
            n = len(self.opt.plan.jump)
            return self.opt.plan.jump, self.opt.original[:n]
        if self.armed:
            return self.breakpoint, self.original[: len(self.breakpoint)]
        return None

    def wants_breakpoint(self) -> bool:
        """Whether any registered probe here is enabled."""
        return any(p.enabled for p in self.probes)

    def in_slot(self, pc: int) -> bool:
        """Whether ``pc`` lies inside this point's slot (either variant)."""
        if self.slot_addr is None or self.plan is None:
            return False
        return self.slot_addr <= pc < self.slot_addr + len(self.plan.code) or self.in_boost(pc)

    def in_boost(self, pc: int) -> bool:
        """Whether ``pc`` lies inside this point's boosted slot variant."""
        if self.boost_addr is None or self.boost_plan is None:
            return False
        return self.boost_addr <= pc < self.boost_addr + len(self.boost_plan.code)


def overlay_original(points: Iterable[ProbePoint], addr: int, data: bytes) -> bytes:
    """Return ``data`` (memory read at ``addr``) with every breakpoint and optimized jump of
    ``points`` replaced by the original bytes it covers: the code before any probe."""
    out = bytearray(data)
    end = addr + len(data)
    for point in points:
        written = point.written()
        if written is None:
            continue
        under = written[1]
        for a in range(max(addr, point.address), min(end, point.address + len(under))):
            out[a - addr] = under[a - point.address]
    return bytes(out)


MAX_BREAKPOINT = 8
"""The longest bytes a point writes, in bytes (a point at ``a`` covers less than
``a + MAX_BREAKPOINT``): a breakpoint is at most 4, the call of a kprobe on an ftrace site
(:mod:`kprobe_ref.ftrace`) 5 on x86_64 and 8 on riscv64, an optimized jump
(``docs/optprobes.md``) 5 on x86_64 and 8 on riscv64."""


class ProbePointList(dict[int, ProbePoint]):
    """Every installed point of one address space, by address (the seed's BTreeMap).

    Besides the mapping, the list keeps its addresses in order, so that the points
    overlapping a range are found by bisection: the cost of reading code as it was before
    any probe does not grow with the number of points."""

    def __init__(self) -> None:
        super().__init__()
        self._order: list[int] = []

    def __setitem__(self, addr: int, point: ProbePoint) -> None:
        if addr not in self:
            bisect.insort(self._order, addr)
        super().__setitem__(addr, point)

    def __delitem__(self, addr: int) -> None:
        super().__delitem__(addr)
        del self._order[bisect.bisect_left(self._order, addr)]

    def pop(self, addr: int, *default: ProbePoint | None) -> ProbePoint | None:  # type: ignore[override]
        if addr in self:
            point = self[addr]
            del self[addr]
            return point
        if default:
            return default[0]
        raise KeyError(addr)

    def clear(self) -> None:
        super().clear()
        self._order.clear()

    def between(self, lo: int, hi: int) -> list[ProbePoint]:
        """The points whose address lies in ``[lo, hi)``, in address order."""
        i, j = bisect.bisect_left(self._order, lo), bisect.bisect_left(self._order, hi)
        return [self[a] for a in self._order[i:j]]

    def overlay_original(self, addr: int, data: bytes) -> bytes:
        """Return ``data`` (memory read at ``addr``) with every armed breakpoint and
        optimized jump replaced by the original bytes it covers: what the code looked like
        before any probe."""
        near = self.between(addr - MAX_BREAKPOINT + 1, addr + len(data))
        return overlay_original(near, addr, data) if near else data
