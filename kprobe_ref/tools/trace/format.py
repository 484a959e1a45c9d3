"""How recorded events print: ftrace's ``trace`` file, JSON, and the profile tables.

A line is the kernel's: the task, pid, CPU, five flag characters and the timestamp
(``%16s-%-7d [%03d] %s %5lu.%06lu: ``), then the event as ``print_kprobe_event``,
``print_kretprobe_event`` and ``print_uprobe_event`` write it::

    myprobe: (gcd+0x0/0x40) a=0x30 b=0x12          kprobe: the probe's symbol+offset/size
    myret: (main+0x1c/0x40 <- gcd) ret=0x6         kretprobe: return site <- function
    p_user_0x1040: (0x10001040) arg1=0x5           uprobe: the address
    ur: (0x10001208 <- 0x10001040) ret=0x6         uretprobe: return address <- function

Values print by type as ``trace_probe.c`` prints them: ``u``/``s`` decimal, ``x`` and the
default ``x64`` as ``0x%x``, ``char`` as ``'c'``, ``symbol`` as ``%pS``, strings quoted (a
faulted one as ``(fault)``), arrays as ``{a,b,c}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from kprobe_ref.tools.trace.fetch import Fault, Value
from kprobe_ref.tools.trace.grammar import FetchType

__all__ = ["HEADER", "Record", "format_json", "format_line", "format_value", "profile_lines"]

HEADER = """\
# tracer: nop
#
# entries-in-buffer/entries-written: {n}/{n}   #P:1
#
#                                _-----=> irqs-off/BH-disabled
#                               / _----=> need-resched
#                              | / _---=> hardirq/softirq
#                              || / _--=> preempt-depth
#                              ||| / _-=> migrate-disable
#                              |||| /     delay
#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION
#              | |         |   |||||     |         |
"""


@dataclass
class Record:
    """One event in the ring buffer."""

    task: str
    pid: int
    cpu: int
    flags: str
    ts_ns: int
    group: str
    event: str
    kind: str
    """``kprobe``, ``kretprobe``, ``uprobe`` or ``uretprobe``."""
    site: str
    """The parenthesised part: ``gcd+0x0/0x40``, ``main+0x1c/0x40 <- gcd``, ``0x10001040``."""
    addresses: dict[str, int]
    args: list[tuple[str, FetchType, int, Value]] = field(default_factory=list)
    """``(name, type, array count, value)`` per argument."""


def _one(t: FetchType, v: Value, symbolize: object) -> str:
    if isinstance(v, Fault):
        return "(fault)"
    if isinstance(v, str):
        return f'"{v}"'
    assert isinstance(v, int)
    if t.fmt == "x":
        return f"0x{v:x}"
    if t.fmt == "c":
        return f"'{chr(v)}'"
    if t.fmt == "S":
        assert callable(symbolize)
        return str(symbolize(v))
    return str(v)


def format_value(t: FetchType, count: int, v: Value, symbolize: object) -> str:
    """One argument's printed value."""
    if count:
        assert isinstance(v, list)
        return "{" + ",".join(_one(t, e, symbolize) for e in v) + "}"
    return _one(t, v, symbolize)


def format_line(r: Record, symbolize: object) -> str:
    """The ftrace line of one event."""
    sec, ns = divmod(r.ts_ns, 1_000_000_000)
    head = f"{r.task:>16}-{r.pid:<7} [{r.cpu:03d}] {r.flags} {sec:5d}.{ns // 1000:06d}: "
    args = "".join(f" {n}={format_value(t, c, v, symbolize)}" for n, t, c, v in r.args)
    return f"{head}{r.event}: ({r.site}){args}"


def _json_value(v: Value, t: FetchType, symbolize: object) -> object:
    if isinstance(v, list):
        return [_json_value(e, t, symbolize) for e in v]
    if isinstance(v, Fault):
        return None
    if isinstance(v, int) and t.fmt == "S":
        assert callable(symbolize)
        return {"value": v, "symbol": symbolize(v)}
    return v


def format_json(r: Record, symbolize: object) -> str:
    """One event as a JSON object (a faulted fetch is ``null``)."""
    obj: dict[str, object] = {
        "type": "event", "task": r.task, "pid": r.pid, "cpu": r.cpu, "flags": r.flags,
        "timestamp_ns": r.ts_ns, "group": r.group, "event": r.event, "kind": r.kind,
        "site": r.site, **r.addresses,
        "args": {n: _json_value(v, t, symbolize) for n, t, _, v in r.args},
    }
    return json.dumps(obj)


def profile_lines(kprobes: list[tuple[str, int, int]], uprobes: list[tuple[str, str, int]]
                  ) -> list[str]:
    """``kprobe_profile`` (event, hits, misses) and ``uprobe_profile`` (file, event,
    hits) as the kernel prints them, under a heading each."""
    out = ["# kprobe_profile: event, hits, misses"]
    out += [f"  {name:<44} {hit:15d} {miss:15d}" for name, hit, miss in kprobes]
    if uprobes:
        out.append("# uprobe_profile: file, event, hits")
        out += [f"  {path} {name:<44} {hit:15d}" for path, name, hit in uprobes]
    return out
