"""User probes: uprobes and uretprobes in a process's address space.

The engine is the kprobe engine, run on a process's own tables (``Machine.process(pid)``
gives its ``manager`` and ``points``): breakpoints go into that process's memory only, slots
live in its executable slot area (which may be far from its text: x86_64 RIP-relative
operands then go through a scratch register), memory read by a simulated instruction is the
process's, and a uprobe in one process never fires in another that runs the same code at the
same address.  These functions check that the probe is a user probe for the tables given.
"""

from __future__ import annotations

from kprobe_ref.errors import InvalidProbeDefinition
from kprobe_ref.kretprobe import Kretprobe, register_kretprobe, unregister_kretprobe
from kprobe_ref.manager import (
    ProbeManager,
    kprobe_handler_from_break,
    kprobe_handler_from_debug,
    register_kprobe,
    unregister_kprobe,
)
from kprobe_ref.point import ProbePointList
from kprobe_ref.probe import Kprobe, KretprobeBuilder, ProbeBuilder
from kprobe_ref.ptregs import PtRegs

__all__ = [
    "register_uprobe",
    "register_uretprobe",
    "unregister_uprobe",
    "unregister_uretprobe",
    "uprobe_handler_from_break",
    "uprobe_handler_from_debug",
]


def _need_user(m: ProbeManager, what: str, pid: int | None) -> None:
    if pid is None:
        raise InvalidProbeDefinition(f"a {what} needs with_user_mode(pid)")
    if m.pid is None:
        raise InvalidProbeDefinition(
            f"a {what} is registered with the process's tables (Machine.process(pid)), not "
            "the kernel's"
        )


def register_uprobe(m: ProbeManager, points: ProbePointList, builder: ProbeBuilder) -> Kprobe:
    """Register a uprobe in the process whose tables ``m`` and ``points`` are."""
    _need_user(m, "uprobe", builder.user_pid)
    return register_kprobe(m, points, builder)


def unregister_uprobe(m: ProbeManager, points: ProbePointList, probe: Kprobe) -> None:
    """Remove a uprobe; the last one at an address restores the page byte for byte."""
    unregister_kprobe(m, points, probe)


def register_uretprobe(
    m: ProbeManager, points: ProbePointList, builder: KretprobeBuilder
) -> Kretprobe:
    """Register a uretprobe at a function entry of the process."""
    _need_user(m, "uretprobe", builder.user_pid)
    return register_kretprobe(m, points, builder)


def unregister_uretprobe(m: ProbeManager, points: ProbePointList, rp: Kretprobe) -> None:
    """Remove a uretprobe."""
    unregister_kretprobe(m, points, rp)


def uprobe_handler_from_break(m: ProbeManager, regs: PtRegs) -> bool:
    """Handle a breakpoint trap in user mode (a uprobe or the process's trampoline)."""
    return kprobe_handler_from_break(m, regs)


def uprobe_handler_from_debug(m: ProbeManager, regs: PtRegs) -> bool:
    """Handle the end of a uprobe's out-of-line step."""
    return kprobe_handler_from_debug(m, regs)
