"""Kprobes on ftrace sites (``CONFIG_KPROBES_ON_FTRACE``, x86_64 and riscv64).

A kprobe whose address is an ftrace record address (``rec->ip``, see
:mod:`kprobe_ref.kernel.ftrace`) is not armed with a breakpoint.  Linux flags it
``KPROBE_FLAG_FTRACE`` (``check_ftrace_location``) and arms it by registering an ftrace
callback for that one site: the site's NOP becomes a call to an ftrace trampoline, the
trampoline saves a ``pt_regs`` frame and calls ``kprobe_ftrace_handler``, no trap is
taken, and nothing is single-stepped, because the instruction under the probe is a NOP.

Here the point's "breakpoint" is that call (:func:`~kprobe_ref.kernel.ftrace.ftrace_call`),
so arming, disarming and sharing a point work as for any point, and the trampoline is an
address the host intercepts (``Machine`` stops there and calls
:func:`ftrace_regs_call`).  The frame the handlers see is the one Linux's trampoline
builds:

- x86_64 (``ftrace_regs_caller``): ``rsp`` as at the site (the return address the call
  pushed is popped), ``rip`` is the site plus one while pre-handlers run (as if an ``int3``
  had been hit there), then the site plus ``MCOUNT_INSN_SIZE`` (5) for post-handlers, as if
  the NOP had been single-stepped; execution continues after the site.
- riscv64 (``ftrace_regs_caller``): the call links through ``t0``, so ``ra`` is untouched;
  ``epc`` is the site while pre-handlers run and the site plus 8 for post-handlers.

A pre-handler that returns True has set the PC itself: post-handlers are skipped and
execution continues where it says.  A hit while this CPU is already inside a probe is
counted in ``nmissed`` and the site is passed over (``kprobe_running`` in the handler).
"""

from __future__ import annotations

from collections.abc import Callable

from kprobe_ref.kernel.ftrace import FtraceTable, ftrace_call
from kprobe_ref.manager import (
    CtlBlock,
    ProbeManager,
    Status,
    _done_with,
    _live,
    _run_post,
    _run_pre,
)
from kprobe_ref.point import ProbePoint
from kprobe_ref.ptregs import PtRegs

__all__ = ["KprobeFtrace", "ftrace_regs_call", "kprobe_ftrace_handler", "site_return"]

_MASK = (1 << 64) - 1


class KprobeFtrace:
    """The kernel's ftrace sites as the probe engine uses them (``m.ftrace``)."""

    def __init__(self, table: FtraceTable, trampoline: Callable[[], int]) -> None:
        """``trampoline()`` returns the address the sites call (allocated by the host on
        first use, near the text)."""
        self.table = table
        self.abi = table.abi
        self._trampoline = trampoline

    def handles(self, addr: int) -> bool:
        """Whether a kprobe at ``addr`` goes through ftrace."""
        return self.abi.kprobes_on_ftrace and addr in self.table.sites

    def adopt(self, m: ProbeManager, point: ProbePoint) -> ProbePoint:
        """Turn a freshly validated point at an ftrace site into an ftrace point: its
        original bytes are the whole NOP area, its "breakpoint" the call to the
        trampoline, and it needs no slot.  Other points are returned unchanged."""
        if m.pid is not None or not self.handles(point.address):
            return point
        size = self.abi.insn_size
        point.original = m.aux.read_memory(point.address, size, None)
        point.breakpoint = ftrace_call(self.abi.isa, point.address, self._trampoline())
        point.ftrace = True
        return point


def kprobe_ftrace_handler(m: ProbeManager, ip: int, regs: PtRegs) -> None:
    """Linux's ``kprobe_ftrace_handler`` for the site at ``ip``; ``regs`` is the
    trampoline's frame (its PC the return address of the site's call) and says where
    execution continues when this returns."""
    point = m.break_list.get(ip)
    if point is None or not point.ftrace or not _live(point):
        return
    stack = m.ctl_stack()
    if stack:
        for probe in _live(point):
            probe.nmissed += 1
        m.emit("missed", ip)
        return
    assert m.ftrace is not None
    abi = m.ftrace.abi
    orig = regs.pc
    m.emit("hit", ip, "ftrace")
    point.busy += 1
    try:
        regs.pc = (ip + abi.pre_pc_delta) & _MASK
        if _run_pre(m, point, regs):
            m.emit("skipped", ip)
            return
        regs.pc = (ip + abi.insn_size) & _MASK
        m.emit("ftrace", ip)
        stack.append(CtlBlock(point, Status.HIT_SSDONE))
        try:
            _run_post(m, point, regs)
        finally:
            stack.pop()
        regs.pc = orig
    finally:
        _done_with(m, point)


def site_return(m: ProbeManager, sp: int, link: int) -> tuple[int, int]:
    """Undo a site's call at the trampoline's entry: the return address it left and the
    stack pointer as at the site.  x86_64's call pushed the return address (popped here:
    the caller moves ``sp`` on by 8); riscv64's linked it through ``t0`` (``link``)."""
    assert m.ftrace is not None
    if m.ftrace.abi.link is not None:
        return link, sp
    ret = int.from_bytes(m.aux.read_memory(sp, 8, None), "little")
    return ret, (sp + 8) & _MASK


def ftrace_regs_call(m: ProbeManager, regs: PtRegs) -> None:
    """The trampoline's work, on the frame Linux's ``ftrace_regs_caller`` builds: ``regs``
    holds the CPU's registers with the site's call undone (:func:`site_return`), its PC
    the call's return address.  Runs :func:`kprobe_ftrace_handler` for the site; ``regs``
    then says where to continue."""
    assert m.ftrace is not None
    ret = regs.pc
    kprobe_ftrace_handler(m, (ret - m.ftrace.abi.insn_size) & _MASK, regs)
