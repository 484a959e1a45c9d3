"""A tracing session: probe events defined in the kernel's syntax, on a simulated machine.

A :class:`TraceSession` is what tracefs is to a kernel: it takes ``kprobe_events`` and
``uprobe_events`` commands (:meth:`define`), registers the probes they describe on a
:class:`~kprobe_ref.sim.Machine`, records one event per hit into a buffer, and keeps each
probe's hit and miss counts for the profile.

Events are recorded by the probes' own handlers, as Linux's ``kprobe_dispatcher`` and
``kretprobe_dispatcher`` do: a kprobe event by its pre-handler, a kretprobe event by its
return handler (with an entry handler that saves the ``$argN`` a return event fetches).
No post handler or event callback is involved, so a traced instruction keeps whatever
single-trap path it would have without tracing.

Uprobe events name a file and a file offset.  They are installed in every process spawned
from that file (:meth:`spawn`), at the address its program headers map the offset to, and
removed from all of them by ``-:EVENT``.  Several definitions with one ``GRP/EVENT`` make one
event with several probes, as in Linux.

Tasks: kernel functions are called on behalf of task ``main`` (pid 1); a process's task is
named after its file (15 characters at most, as ``TASK_COMM_LEN`` allows) with its pid.
Kernel events carry the flags ``d....`` (the breakpoint handler runs with interrupts off),
uprobe events ``.....`` (task context).  Timestamps are the machine's instruction count, one
nanosecond per instruction.
"""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass, field
from pathlib import Path

from elftools.elf.elffile import ELFFile

from kprobe_ref.errors import KprobeError, NotInstructionBoundary
from kprobe_ref.kretprobe import Kretprobe, register_kretprobe, unregister_kretprobe
from kprobe_ref.manager import register_kprobe, unregister_kprobe
from kprobe_ref.probe import Handler, Kprobe, KretprobeBuilder, ProbeBuilder
from kprobe_ref.ptregs import PtRegs
from kprobe_ref.sim.elf import Image
from kprobe_ref.sim.machine import Machine
from kprobe_ref.tools.trace.fetch import FetchEnv, fetch_args
from kprobe_ref.tools.trace.format import Record
from kprobe_ref.tools.trace.grammar import (
    DefinitionError,
    Deletion,
    Op,
    ProbeDefinition,
    ProbeLog,
    SymbolCounter,
    parse,
)
from kprobe_ref.uprobe import register_uprobe, register_uretprobe

__all__ = ["KERNEL_TASK", "KernelSymbols", "TraceSession"]

KERNEL_TASK = ("main", 1)
"""The task kernel calls are made for: ``(comm, pid)``."""
_MASK = (1 << 64) - 1


class KernelSymbols(SymbolCounter):
    """kallsyms over the images loaded into a machine's kernel (or one process image)."""

    def __init__(self, images: list[Image]) -> None:
        self.images = images
        table: list[tuple[int, int, str]] = []
        for image in images:
            for name, addrs in image.addresses.items():
                table += [(a, image.sizes.get(name, 0), name) for a in addrs]
        self.table = sorted(table)
        self._starts = [t[0] for t in self.table]

    def addresses(self, name: str) -> list[int]:
        """Every address of ``name``."""
        return sorted({a for image in self.images for a in image.addresses.get(name, [])})

    def count(self, name: str) -> int:
        return len(self.addresses(name))

    def is_function_entry(self, name: str, offset: int) -> bool:
        return offset == 0 and self.count(name) == 1

    def lookup(self, addr: int) -> tuple[str, int, int] | None:
        """``(name, offset, size)`` of the sized symbol containing ``addr``."""
        i = bisect.bisect_right(self._starts, addr) - 1
        for j in range(i, max(i - 64, -1), -1):
            start, size, name = self.table[j]
            if start <= addr < start + size:
                return name, addr - start, size
        return None

    def symbolize(self, addr: int) -> str:
        """``%pS``: ``name+0xoff/0xsize``, or the address in hex."""
        found = self.lookup(addr)
        if found is None:
            return f"0x{addr:x}"
        name, off, size = found
        return f"{name}+0x{off:x}/0x{size:x}"

    def name(self, addr: int) -> str:
        """``%ps``: the symbol's name alone, or the address in hex."""
        found = self.lookup(addr)
        return f"0x{addr:x}" if found is None else found[0]


@dataclass
class Site:
    """One registered probe of an event (Linux's ``trace_kprobe`` / ``trace_uprobe``)."""

    defn: ProbeDefinition
    address: int = 0
    kprobe: Kprobe | None = None
    kretprobe: Kretprobe | None = None
    nhit: int = 0
    installed: dict[int, Kprobe | Kretprobe] = field(default_factory=dict)
    """Uprobes: pid -> the probe in that process."""

    def nmissed(self) -> int:
        """Misses of the probe: reentrant hits, and calls a full instance pool left
        unhooked."""
        probes = [p for p in (self.kprobe, self.kretprobe) if p is not None]
        probes += list(self.installed.values())
        total = 0
        for p in probes:
            total += p.nmissed
            if isinstance(p, Kretprobe) and p.kprobe is not None:
                total += p.kprobe.nmissed
        return total


@dataclass
class Event:
    """A probe event: its name and the probes that record it."""

    group: str
    name: str
    sites: list[Site] = field(default_factory=list)

    @property
    def first(self) -> ProbeDefinition:
        return self.sites[0].defn


@dataclass
class _Proc:
    pid: int
    path: str
    comm: str
    heap: int = 0x2000_0000


class TraceSession:
    """Probe events on one machine, with their recorded events."""

    def __init__(self, machine: Machine) -> None:
        self.m = machine
        self.symbols = KernelSymbols(machine.images)
        self.events: dict[tuple[str, str], Event] = {}
        self.records: list[Record] = []
        self.procs: dict[int, _Proc] = {}
        self.removed: list[Site] = []

    # -- definitions ------------------------------------------------------------------------
    def define(self, text: str) -> None:
        """Apply one ``kprobe_events``/``uprobe_events`` command.  A command the kernel
        refuses raises :class:`DefinitionError` and changes nothing."""
        cmd = parse(text, self.m.isa, self.symbols)
        if isinstance(cmd, Deletion):
            self._delete(cmd)
            return
        event = self._event_for(cmd)
        site = Site(cmd)
        if cmd.user:
            self._check_file(cmd)
            try:
                for proc in self.procs.values():
                    if _same_file(proc.path, cmd.path or ""):
                        self._install_uprobe(site, proc)
            except BaseException:
                self._remove_site(site)  # all or nothing: undo the processes done so far
                self.removed.remove(site)
                raise
        else:
            self._register_kernel(site)
        if event is None:
            event = Event(cmd.group, cmd.event)
            self.events[(cmd.group, cmd.event)] = event
        event.sites.append(site)

    def _event_for(self, d: ProbeDefinition) -> Event | None:
        """The existing event ``d`` appends to (``None`` for a new one); refuses what
        ``register_trace_kprobe``/``register_trace_uprobe`` refuse."""
        event = self.events.get((d.group, d.event))
        if event is None:
            return None
        log = ProbeLog(d.subsystem, d.argv)
        old = event.first
        if old.user != d.user:
            raise log.err(0, "EVENT_EXIST")
        if old.is_return != d.is_return:
            raise log.err(0, "DIFF_PROBE_TYPE")
        diff = _compare_args(d, old)
        if diff:
            log.index = diff + 1
            raise log.err(0, "DIFF_ARG_TYPE")
        for site in event.sites:
            if _same_probe(site.defn, d):
                raise log.err(0, "SAME_PROBE")
        return event

    def _delete(self, cmd: Deletion) -> None:
        """``dyn_event_release``: remove every probe whose event, group and (when given)
        place and arguments match; an event left with no probe goes."""
        matched = [
            (e, site) for e in self.events.values() for site in e.sites
            if (not cmd.event or e.name == cmd.event)
            and (cmd.group is None or e.group == cmd.group)
            and _head_matches(site.defn, cmd.args)
        ]
        if not matched:
            raise DefinitionError("dynamic_events", None, cmd.command, None,
                                  "No such file or directory", "no such probe event")
        for event, site in matched:
            self._remove_site(site)
            event.sites.remove(site)
            if not event.sites:
                del self.events[(event.group, event.name)]

    def _remove_site(self, site: Site) -> None:
        if site.kprobe is not None:
            unregister_kprobe(self.m.manager, self.m.points, site.kprobe)
        if site.kretprobe is not None:
            unregister_kretprobe(self.m.manager, self.m.points, site.kretprobe)
        for pid, probe in site.installed.items():
            proc = self.m.process(pid)
            if isinstance(probe, Kretprobe):
                unregister_kretprobe(proc.manager, proc.points, probe)
            else:
                unregister_kprobe(proc.manager, proc.points, probe)
            if site.defn.ref_ctr_offset:
                self._bump_refctr(site, self.procs[pid], -1)
        site.installed.clear()
        self.removed.append(site)

    # -- kernel probes ----------------------------------------------------------------------
    def _kernel_address(self, d: ProbeDefinition) -> int:
        log = ProbeLog(d.subsystem, d.argv)
        log.index = 1
        if d.symbol is None:
            assert d.address is not None
            return d.address
        addrs = self.symbols.addresses(d.symbol)
        if len(addrs) != 1:
            raise log.err(0, "BAD_PROBE_ADDR")
        return (addrs[0] + d.offset) & _MASK

    def _resolve_symbols(self, d: ProbeDefinition) -> None:
        """``traceprobe_update_arg``: give each ``@SYM[+|-offs]`` its address."""
        log = ProbeLog(d.subsystem, d.argv)
        log.index = 1
        for arg in d.args:
            for i, insn in enumerate(arg.code):
                if insn.op is not Op.SYMBOL:
                    continue
                name, sign, rest = _split_symbol(insn.data)
                from kprobe_ref.tools.trace.numbers import kstrtol

                offset = kstrtol(sign + rest) if sign else 0
                if offset is None:
                    raise _reg_error(log, "FAIL_REG_PROBE", f"bad offset in @{insn.data}")
                addrs = self.symbols.addresses(name)
                if not addrs:
                    raise log.err(0, "BAD_PROBE_ADDR")
                arg.code[i + 1].imm = (addrs[0] + offset) & _MASK

    def _register_kernel(self, site: Site) -> None:
        d = site.defn
        addr = self._kernel_address(d)
        self._resolve_symbols(d)
        site.address = addr
        log = ProbeLog(d.subsystem, d.argv)
        log.index = 1
        try:
            if d.is_return:
                builder = KretprobeBuilder().with_symbol_addr(addr).with_ret_handler(
                    self._return_handler(site, None)
                ).with_data({})
                if d.uses_entry_args:
                    builder = builder.with_entry_handler(self._entry_handler(site))
                if d.maxactive:
                    builder = builder.with_maxactive(d.maxactive)
                site.kretprobe = register_kretprobe(self.m.manager, self.m.points, builder)
            else:
                builder_p = ProbeBuilder().with_symbol_addr(addr).with_pre_handler(
                    self._pre_handler(site, None)
                )
                site.kprobe = register_kprobe(self.m.manager, self.m.points, builder_p)
        except NotInstructionBoundary as exc:
            raise _reg_error(log, "BAD_INSN_BNDRY", str(exc)) from None
        except KprobeError as exc:
            raise _reg_error(log, "FAIL_REG_PROBE", str(exc)) from None

    # -- user probes --------------------------------------------------------------------------
    def _check_file(self, d: ProbeDefinition) -> None:
        assert d.path is not None
        try:
            _file_to_vaddr(d.path, d.file_offset)
        except KprobeError as exc:
            log = ProbeLog(d.subsystem, d.argv)
            log.index = 1
            raise _reg_error(log, "BAD_UPROBE_OFFS", str(exc)) from None

    def spawn(self, path: str) -> int:
        """The process running ``path`` (spawned on first use, then reused), with every
        uprobe event of that file installed in it."""
        for proc in self.procs.values():
            if _same_file(proc.path, path):
                return proc.pid
        pid = self.m.spawn(path)
        proc = _Proc(pid, path, os.path.basename(path)[:15])
        self.procs[pid] = proc
        for event in self.events.values():
            for site in event.sites:
                if site.defn.user and site.defn.path and _same_file(site.defn.path, path):
                    self._install_uprobe(site, proc)
        return pid

    def _install_uprobe(self, site: Site, proc: _Proc) -> None:
        d = site.defn
        assert d.path is not None
        vaddr = _file_to_vaddr(d.path, d.file_offset)
        site.address = vaddr
        process = self.m.process(proc.pid)
        try:
            if d.is_return:
                rb = KretprobeBuilder().with_symbol_addr(vaddr).with_user_mode(proc.pid)
                rb = rb.with_ret_handler(self._return_handler(site, proc)).with_data({})
                site.installed[proc.pid] = register_uretprobe(process.manager, process.points,
                                                              rb)
            else:
                pb = ProbeBuilder().with_symbol_addr(vaddr).with_user_mode(proc.pid)
                pb = pb.with_pre_handler(self._pre_handler(site, proc))
                site.installed[proc.pid] = register_uprobe(process.manager, process.points, pb)
        except KprobeError as exc:
            log = ProbeLog(d.subsystem, d.argv)
            log.index = 1
            raise _reg_error(log, "FAIL_REG_PROBE", str(exc)) from None
        if d.ref_ctr_offset:
            self._bump_refctr(site, proc, +1)

    def _bump_refctr(self, site: Site, proc: _Proc, delta: int) -> None:
        """Count the probe in the SDT semaphore (a ``u16``) at the reference counter's
        file offset, as ``uprobe_register`` does in every process mapping the file."""
        d = site.defn
        assert d.path is not None
        addr = _file_to_vaddr(d.path, d.ref_ctr_offset, executable=False)
        space = self.m.process(proc.pid).space
        value = int.from_bytes(space.read(addr, 2), "little")
        space.write(addr, ((value + delta) & 0xFFFF).to_bytes(2, "little"), enforce=False)

    # -- recording ------------------------------------------------------------------------------
    def _env(self, regs: PtRegs, proc: _Proc | None, site: Site) -> FetchEnv:
        pid = None if proc is None else proc.pid

        def read(addr: int, n: int, user: bool) -> bytes | None:
            if user and pid is None:
                return None
            try:
                return self.m.read_memory(addr, n, pid if user else None)
            except KprobeError:
                return None

        comm = KERNEL_TASK[0] if proc is None else proc.comm
        base = 0 if proc is None else (site.address - site.defn.file_offset) & _MASK
        return FetchEnv(regs, read, comm, proc is not None, lambda n: self._arg(regs, n),
                        self.symbols.symbolize, file_base=base)

    def _arg(self, regs: PtRegs, n: int) -> int:
        """``regs_get_kernel_argument``: the n-th integer argument (0-based); x86_64's
        seventh and later come from the stack above the return address, the other ISAs
        pass eight in registers and give 0 beyond."""
        names = regs.ARGS
        if n < len(names):
            return regs.get(names[n])
        if self.m.isa != "x86_64":
            return 0
        try:
            data = self.m.read_memory((regs.sp + 8 * (n - len(names) + 1)) & _MASK, 8, None)
        except KprobeError:
            return 0
        return int.from_bytes(data, "little")

    def _record(self, site: Site, proc: _Proc | None, regs: PtRegs, where: str,
                addresses: dict[str, int], entry_args: dict[int, int] | None = None) -> None:
        d = site.defn
        site.nhit += 1
        env = self._env(regs, proc, site)
        if entry_args:
            env.entry_args = entry_args
        values = fetch_args(env, d.args)
        kind = ("u" if d.user else "k") + ("retprobe" if d.is_return else "probe")
        task, pid = KERNEL_TASK if proc is None else (proc.comm, proc.pid)
        flags = "....." if d.user else "d...."
        self.records.append(Record(
            task, pid, self.m.current_cpu(), flags, self.m.instructions, d.group, d.event,
            kind, where, addresses,
            [(a.name, a.type, a.count, v) for a, v in zip(d.args, values, strict=True)],
        ))

    def _pre_handler(self, site: Site, proc: _Proc | None) -> Handler:
        def pre(_data: object, regs: PtRegs) -> None:
            addr = site.address
            where = f"0x{addr:x}" if proc is not None else self.symbols.symbolize(addr)
            self._record(site, proc, regs, where, {"ip": addr})

        return pre

    def _entry_handler(self, site: Site) -> Handler:
        params = sorted({i.param for a in site.defn.args for i in a.code if i.op is Op.EDATA})

        def entry(data: object, regs: PtRegs) -> None:
            assert isinstance(data, dict)
            data["args"] = {n: self._arg(regs, n) for n in params}

        return entry

    def _return_handler(self, site: Site, proc: _Proc | None) -> Handler:
        def ret(data: object, regs: PtRegs) -> None:
            func, ret_ip = site.address, regs.pc
            if proc is not None:
                where = f"0x{ret_ip:x} <- 0x{func:x}"
            else:
                where = f"{self.symbols.symbolize(ret_ip)} <- {self.symbols.name(func)}"
            saved = data.get("args") if isinstance(data, dict) else None
            entry_args = saved if isinstance(saved, dict) else None
            self._record(site, proc, regs, where, {"func": func, "ret_ip": ret_ip},
                         entry_args)

        return ret

    # -- the profile ---------------------------------------------------------------------------
    def profile(self) -> tuple[list[tuple[str, int, int]], list[tuple[str, str, int]]]:
        """``kprobe_profile`` rows (event, hits, misses) and ``uprobe_profile`` rows (file,
        event, hits), for every probe defined during the session, removed ones included."""
        sites = [s for e in self.events.values() for s in e.sites] + self.removed
        kern = [(s.defn.event, s.nhit, s.nmissed()) for s in sites if not s.defn.user]
        user = [(s.defn.path or "", s.defn.event, s.nhit) for s in sites if s.defn.user]
        return kern, user


def _split_symbol(text: str) -> tuple[str, str, str]:
    for i, ch in enumerate(text):
        if ch in "+-":
            return text[:i], ch, text[i + 1:]
    return text, "", ""


def _reg_error(log: ProbeLog, code: str, detail: str) -> DefinitionError:
    err = log.err(0, code)
    err.detail = detail
    return err


def _compare_args(a: ProbeDefinition, b: ProbeDefinition) -> int:
    """``trace_probe_compare_arg_type``: 0, or the 1-based index of the first argument
    whose type, array size or name differs (or one past the shorter list)."""
    if len(a.args) != len(b.args):
        return min(len(a.args), len(b.args)) + 1
    for i, (x, y) in enumerate(zip(a.args, b.args, strict=True)):
        if x.type != y.type or x.count != y.count or x.name != y.name:
            return i + 1
    return 0


def _same_probe(a: ProbeDefinition, b: ProbeDefinition) -> bool:
    """The same place and the same argument texts."""
    place_a = (a.symbol, a.offset, a.address, a.path, a.file_offset)
    place_b = (b.symbol, b.offset, b.address, b.path, b.file_offset)
    return place_a == place_b and [x.comm for x in a.args] == [y.comm for y in b.args]


def _head_matches(d: ProbeDefinition, argv: list[str]) -> bool:
    """``trace_kprobe_match_command_head`` / ``trace_uprobe_match_command_head``: the
    place as the kernel prints it (``SYM``, ``SYM+OFFS``, ``0x%p``; ``PATH:0x%016lx``),
    then each ``NAME=FETCHARG`` (``trace_probe_match_command_args``)."""
    if not argv:
        return True
    if d.user:
        place = f"{d.path}:0x{d.file_offset:016x}"
        if d.ref_ctr_offset:
            place += f"(0x{d.ref_ctr_offset:x})"
    elif d.symbol is None:
        place = f"0x{d.address or 0:016x}"
    else:
        place = f"{d.symbol}+{d.offset}" if d.offset else d.symbol
    if argv[0] != place or len(d.args) < len(argv) - 1:
        return False
    return all(text == f"{a.name}={a.comm}"
               for a, text in zip(d.args, argv[1:], strict=False))


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _file_to_vaddr(path: str, offset: int, executable: bool = True) -> int:
    """The address a static image maps file offset ``offset`` to."""
    try:
        with Path(path).open("rb") as f:
            elf = ELFFile(f)
            for seg in elf.iter_segments():
                if seg["p_type"] != "PT_LOAD":
                    continue
                start, size = seg["p_offset"], seg["p_filesz"]
                if start <= offset < start + size and (not executable or seg["p_flags"] & 1):
                    return int(seg["p_vaddr"] + offset - start)
    except (OSError, ValueError, KeyError) as exc:
        raise KprobeError(f"{path}: not a readable ELF image ({exc})") from None
    except Exception as exc:  # pyelftools raises its own ELFError on malformed files
        raise KprobeError(f"{path}: not a readable ELF image ({exc})") from None
    what = "an executable" if executable else "a loadable"
    raise KprobeError(f"file offset {offset:#x} of {path} is not in {what} segment")
