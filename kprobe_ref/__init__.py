"""kprobe-ref: a readable, executable reference implementation of dynamic probes.

kprobes, kretprobes, uprobes and uretprobes for x86_64, aarch64, riscv64 and loongarch64,
with the API of the ``kprobe`` Rust crate.  Every probed instruction is decoded to a verdict:
rejected with a reason, simulated in the trap handler, or stepped out of line in a slot
(relocated where it reads the PC).  ``kprobe_ref.sim.Machine`` is a simulated host that runs
real machine code; ``kprobe_ref.proofs`` proves the rules with Z3.
"""

from __future__ import annotations

from kprobe_ref.errors import (
    InvalidAddress,
    InvalidProbeDefinition,
    KprobeError,
    NoSuchProcess,
    NotRegistered,
    OutOfReach,
    UnsupportedInstruction,
)
from kprobe_ref.host import KprobeAuxiliaryOps
from kprobe_ref.kretprobe import (
    Kretprobe,
    RetprobeInstance,
    register_kretprobe,
    unregister_kretprobe,
)
from kprobe_ref.manager import (
    EventKind,
    ProbeEvent,
    ProbeManager,
    kprobe_handler_from_break,
    kprobe_handler_from_debug,
    register_kprobe,
    unregister_kprobe,
)
from kprobe_ref.point import ProbePoint, ProbePointList
from kprobe_ref.probe import Kprobe, KretprobeBuilder, ProbeBuilder, ProbeData
from kprobe_ref.ptregs import PtRegs
from kprobe_ref.uprobe import (
    register_uprobe,
    register_uretprobe,
    unregister_uprobe,
    unregister_uretprobe,
    uprobe_handler_from_break,
    uprobe_handler_from_debug,
)

__all__ = [
    "EventKind",
    "InvalidAddress",
    "InvalidProbeDefinition",
    "Kprobe",
    "KprobeAuxiliaryOps",
    "KprobeError",
    "Kretprobe",
    "KretprobeBuilder",
    "NoSuchProcess",
    "NotRegistered",
    "OutOfReach",
    "ProbeBuilder",
    "ProbeData",
    "ProbeEvent",
    "ProbeManager",
    "ProbePoint",
    "ProbePointList",
    "PtRegs",
    "RetprobeInstance",
    "UnsupportedInstruction",
    "kprobe_handler_from_break",
    "kprobe_handler_from_debug",
    "register_kprobe",
    "register_kretprobe",
    "register_uprobe",
    "register_uretprobe",
    "unregister_kprobe",
    "unregister_kretprobe",
    "unregister_uprobe",
    "unregister_uretprobe",
    "uprobe_handler_from_break",
    "uprobe_handler_from_debug",
]

__version__ = "0.1.0"
