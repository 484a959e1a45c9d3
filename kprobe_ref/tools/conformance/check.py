"""Turning a candidate instruction into checked vectors on the simulated machine.

For one :class:`Candidate` (an instruction, its address, kernel or user):

1. The ISA's ``decode`` gives the verdict.  A rejection (or a sequence hazard) is checked by
   registering a probe on a fresh machine: it must raise ``UnsupportedInstruction`` with the
   same reason code and leave memory as it was.
2. Otherwise pre states are drawn deterministically (registers near :data:`~.layout.DATA`,
   flags at random, the stack at :data:`~.layout.STACK`).  For a simulated instruction the
   reference's own rule runs on a recording state first; it gives the next PC, so among the
   drawn states one that falls through and one that branches are kept when both exist.
3. Each kept state runs twice on fresh machines: unprobed, one instruction; then with a
   kprobe (a uprobe for user vectors) until the same next PC.  Pages are mapped lazily: a
   fault on an unmapped page maps it (with :func:`~.layout.page_bytes`) and starts over.
   Both runs must end in the same registers, flags, extra state and memory; a simulated
   instruction's rule must agree with the unprobed CPU.  The slot is what the probe
   manager placed, checked against the ISA's ``build_slot`` for that slot address.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from kprobe_ref.arch import ArchOps, Decoded, Verdict, get_arch
from kprobe_ref.bits import BV
from kprobe_ref.errors import KprobeError, UnsupportedInstruction
from kprobe_ref.manager import register_kprobe, unregister_kprobe
from kprobe_ref.probe import ProbeBuilder
from kprobe_ref.ptregs import PtRegs
from kprobe_ref.sim.errors import GuestFault, StepLimitExceeded
from kprobe_ref.sim.machine import Machine
from kprobe_ref.sim.space import AddressSpace
from kprobe_ref.tools.conformance.layout import (
    CODE,
    DATA,
    MAPPABLE,
    PAGE,
    STACK,
    flag_names,
    page_bytes,
    page_of,
    reg_names,
)
from kprobe_ref.tools.conformance.schema import SCHEMA_VERSION, State, hexint, state_json
from kprobe_ref.tools.verify import bundled_image
from kprobe_ref.uprobe import register_uprobe, unregister_uprobe

__all__ = ["Candidate", "CheckFailed", "Checker", "apply_rule", "changed", "code_pages",
           "draw_state", "vectors_for"]

_MASK = (1 << 64) - 1
DRAWS = 16
"""Pre states drawn per candidate."""
PAGE_RETRIES = 8
"""How many pages one run may map lazily before the state is given up."""


UNICORN_DEFECTS: Mapping[tuple[str, str], str] = {
    ("x86_64", "ret_imm16"): "unicorn 2.1 drops the carry out of bit 15 when it adds 8 + imm16 "
                             "to RSP (the SDM adds to the whole register)",
    ("aarch64", "bc_cond"): "unicorn 2.1 does not implement FEAT_HBC",
}
"""Rows whose unprobed run goes to the P-code CPU, because unicorn executes them wrongly."""


class CheckFailed(Exception):
    """The machine disagrees with the reference (probed, unprobed and rule must agree)."""


@dataclass(frozen=True)
class Candidate:
    """One instruction to turn into vectors.

    ``row`` is the decode-table class the generator aimed at, ``case`` names the operand
    edge case.  ``regs`` and ``flags`` override drawn values (architectural names, such as
    ``x5`` or ``a0``, are accepted).  ``context`` is code of the same function right before
    ``addr`` (for sequence hazards).  ``reason`` is the expected reason code when the
    candidate is built to be rejected.  ``disp_at_slot`` (x86_64) asks for the RIP-relative
    displacement to be chosen so that, relocated to the slot the manager picks, it becomes
    exactly this value."""

    isa: str
    row: str
    case: str
    raw: bytes
    addr: int = CODE
    user: bool = False
    regs: Mapping[str, int] = field(default_factory=dict)
    flags: Mapping[str, int] = field(default_factory=dict)
    context: bytes = b""
    reason: str | None = None
    disp_at_slot: int | None = None


# ---------------------------------------------------------------------------------------
# The recording state: a simulation rule's reads and writes


class RecordingState:
    """A :class:`~kprobe_ref.arch.SimState` over a pre state whose memory is the lazily
    mapped page contents; records every load and store."""

    def __init__(self, frame: PtRegs, extra: dict[str, int], code: Mapping[int, bytes],
                 address: int) -> None:
        self.frame = frame
        self.extras = dict(extra)
        self.code = code
        self._address = address
        self.written: dict[int, int] = {}
        self.reads: list[tuple[int, int]] = []
        self.writes: list[tuple[int, int]] = []

    @property
    def address(self) -> int:
        """The simulated instruction's address."""
        return self._address

    def reg(self, name: str) -> int:
        """A register of the frame; the zero register reads 0."""
        return 0 if name == self.frame.ZERO else self.frame.get(name)

    def set_reg(self, name: str, value: BV) -> None:
        """Write a register of the frame; writes to the zero register are dropped."""
        if name != self.frame.ZERO:
            self.frame.set(name, int(value))

    def set_pc(self, value: BV) -> None:
        """Set the frame's PC."""
        self.frame.pc = int(value) & _MASK

    def byte(self, addr: int) -> int:
        """One byte of memory: written by the rule, else the code or the page contents."""
        addr &= _MASK
        if addr in self.written:
            return self.written[addr]
        base = page_of(addr)
        page = self.code.get(base) or page_bytes(base)
        return page[addr - base]

    def load(self, addr: BV, size: int) -> int:
        """Read ``size`` bytes little-endian and record the access."""
        a = int(addr) & _MASK
        self.reads.append((a, size))
        return int.from_bytes(bytes(self.byte(a + i) for i in range(size)), "little")

    def store(self, addr: BV, size: int, value: BV) -> None:
        """Write ``size`` bytes little-endian and record the access."""
        a = int(addr) & _MASK
        self.writes.append((a, size))
        v = int(value)
        for i in range(size):
            self.written[(a + i) & _MASK] = (v >> (8 * i)) & 0xFF

    def extra(self, name: str) -> int:
        """State outside ``pt_regs`` (0 unless the pre state gives it)."""
        return self.extras.setdefault(name, 0)

    def set_extra(self, name: str, value: BV) -> None:
        """Write state outside ``pt_regs``."""
        self.extras[name] = int(value)


# ---------------------------------------------------------------------------------------
# One run environment: a fresh machine with the vector's pages


class Env:
    """A fresh machine (and a process, for user vectors) with the code and data pages of
    one vector mapped."""

    def __init__(self, arch: ArchOps, user: bool, code: Mapping[int, bytes],
                 data: set[int], cpu: str | None = None) -> None:
        self.arch = arch
        self.m = Machine(arch.name, cpu)
        self.pid: int | None = None
        if user:
            self.pid = self.m.spawn(bundled_image(arch.name, "user"))
            self.space: AddressSpace = self.m.process(self.pid).space
        else:
            self.space = self.m.kernel
        for base, content in sorted(code.items()):
            self.space.map(base, PAGE, "rx")
            self.space.write(base, content, enforce=False)
        for base in sorted(data - set(code)):
            self.space.map(base, PAGE, "rwx")
            self.space.write(base, page_bytes(base), enforce=False)

    @property
    def points(self) -> Any:
        return self.m.points if self.pid is None else self.m.process(self.pid).points

    @property
    def manager(self) -> Any:
        return self.m.manager if self.pid is None else self.m.process(self.pid).manager

    def set_state(self, s: State) -> None:
        frame = self.arch.regs_class()
        for name, value in (*s.regs.items(), *s.flags.items()):
            if name in frame.FIELDS or name.startswith("regs["):
                frame.set(name, value)
        self.m._write_regs(self.space, frame)
        for name, value in (*s.flags.items(), *s.extra.items()):
            if name not in frame.FIELDS:
                self.space.cpu.reg_write(name, value)

    def state(self, extra: tuple[str, ...]) -> State:
        frame = self.m._read_regs(self.space)
        names = flag_names(self.arch)
        regs = {n: frame.get(n) for n in reg_names(self.arch)}
        flags = {n: frame.get(n) if n in frame.FIELDS else self.space.cpu.reg_read(n)
                 for n in names}
        return State(regs, flags, {n: self.space.cpu.reg_read(n) for n in extra})

    def run(self, pc: int, stop: int, steps: int) -> None:
        """Run from ``pc`` until ``stop``.  unicorn ends emulation after a ``WFI`` that
        completed (the PC is past it): that is a run that reached ``stop``."""
        try:
            self.m._run(self.space, pc, frozenset({stop}), steps)
        except GuestFault as exc:
            if not (exc.pc == stop and exc.detail == "emulation ended"):
                raise

    def read(self, addr: int, n: int) -> bytes:
        return self.space.read(addr, n)

    def trace(self) -> tuple[list[tuple[int, int]], list[tuple[int, int]], Callable[[], None]]:
        """Record the guest's data reads and writes from now on; returns both lists and a
        function that stops the recording."""
        reads: list[tuple[int, int]] = []
        writes: list[tuple[int, int]] = []
        cpu: Any = self.space.cpu
        if hasattr(cpu, "uc"):
            import unicorn

            def hook(_uc: Any, access: int, addr: int, size: int, _v: int, _d: Any) -> None:
                (writes if access == unicorn.UC_MEM_WRITE else reads).append((addr, size))

            handle = cpu.uc.hook_add(unicorn.UC_HOOK_MEM_READ | unicorn.UC_HOOK_MEM_WRITE, hook)
            return reads, writes, lambda: cpu.uc.hook_del(handle)
        mem = cpu.mem
        load, store = mem.load, mem.store

        def traced_load(addr: int, n: int) -> int:
            reads.append((addr & _MASK, n))
            return int(load(addr, n))

        def traced_store(addr: int, n: int, value: int) -> None:
            writes.append((addr & _MASK, n))
            store(addr, n, value)

        mem.load, mem.store = traced_load, traced_store

        def stop() -> None:
            del mem.load, mem.store

        return reads, writes, stop


# ---------------------------------------------------------------------------------------
# Drawing pre states


_EDGES = (0, 1, 2, 0x7F, _MASK, 1 << 63, (1 << 63) - 1, 0x8000_0000, 0xFFFF_FFFF,
          0x1_0000_0000, 0xFFFF_FFFF_8000_0000)


def _value(rng: random.Random) -> int:
    roll = rng.random()
    if roll < 0.6:
        return DATA + rng.randrange(0, PAGE, 8)
    if roll < 0.9:
        return rng.choice(_EDGES)
    return rng.getrandbits(64)


def _flag_value(isa: str, name: str, rng: random.Random) -> int:
    if isa == "x86_64":
        return 0x202 | sum(b for b in (0x1, 0x4, 0x10, 0x40, 0x80, 0x800) if rng.random() < 0.5)
    if isa == "aarch64":
        return rng.getrandbits(4) << 28
    return rng.getrandbits(1)


def draw_state(arch: ArchOps, c: Candidate, n: int) -> State:
    """The ``n``-th pre state of candidate ``c``: deterministic in the candidate."""
    rng = random.Random(f"{c.isa}:{c.raw.hex()}:{c.addr:#x}:{c.user}:{c.case}:{n}")
    frame = arch.regs_class()
    names = reg_names(arch)
    shared = _value(rng) if n % 4 == 1 else (0 if n % 4 == 2 else None)
    for name in names:
        frame.set(name, shared if shared is not None else _value(rng))
    frame.sp = STACK + 16 * rng.randrange(-64, 64)
    frame.pc = c.addr
    for name, value in c.regs.items():
        frame.set(name, value)
    flags = {f: _flag_value(c.isa, f, rng) for f in flag_names(arch)}
    flags.update(c.flags)
    if frame.ZERO is not None and frame.ZERO in frame.ALIASES:
        frame.set(frame.ZERO, 0)
    return State({k: frame.get(k) for k in names}, flags)


# ---------------------------------------------------------------------------------------
# Running


@dataclass
class Outcome:
    """What the two runs of one pre state agreed on."""

    pre: State
    post: State
    slot: dict[str, Any] = field(default_factory=dict)


def code_pages(c: Candidate, raw: bytes) -> dict[int, bytes]:
    start = c.addr - len(c.context)
    code = c.context + raw
    pages: dict[int, bytearray] = {}
    for i, b in enumerate(code):
        base = page_of(start + i)
        page = pages.setdefault(base, bytearray(page_bytes(base)))
        page[start + i - base] = b
    return {k: bytes(v) for k, v in pages.items()}


def _regions(accesses: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Merge accesses into sorted disjoint ``(start, end)`` ranges."""
    out: list[list[int]] = []
    for a, n in sorted(accesses):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], a + n)
        else:
            out.append([a, a + n])
    return [(a, b) for a, b in out]


def _frame(arch: ArchOps, s: State) -> PtRegs:
    frame = arch.regs_class()
    for k, v in (*s.regs.items(), *s.flags.items()):
        if k in frame.FIELDS or k.startswith("regs["):
            frame.set(k, v)
    return frame


def apply_rule(arch: ArchOps, d: Decoded, pre: State, code: Mapping[int, bytes]
                ) -> tuple[State, RecordingState]:
    frame = _frame(arch, pre)
    extras = {k: v for k, v in pre.flags.items() if k not in frame.FIELDS}
    rec = RecordingState(frame, {**extras, **pre.extra}, code, d.address)
    arch.simulate(d, rec)
    regs = {k: frame.get(k) for k in reg_names(arch)}
    flags = {k: frame.get(k) if k in frame.FIELDS else rec.extras.get(k, 0)
             for k in flag_names(arch)}
    extra = {k: v for k, v in rec.extras.items() if k not in flags}
    return State(regs, flags, extra), rec


def _with_lazy_pages(body: Callable[[set[int]], Outcome], pages: set[int]) -> Outcome | None:
    """Run ``body`` with the data pages ``pages``, mapping one more page each time a run
    faults on an unmapped, mappable address; ``None`` when the state cannot run."""
    for _ in range(PAGE_RETRIES):
        try:
            return body(pages)
        except GuestFault as exc:
            if not _mappable_miss(exc, pages):
                return None
            assert exc.fault_addr is not None
            pages = pages | {page_of(exc.fault_addr)}
    return None


def _mappable_miss(exc: GuestFault, pages: set[int]) -> bool:
    """Whether a fault is an access to a page not mapped yet that could be."""
    addr = exc.fault_addr
    return addr is not None and addr < MAPPABLE and page_of(addr) not in pages


class Checker:
    """Checks the candidates of one ISA."""

    def __init__(self, isa: str) -> None:
        self.arch = get_arch(isa)
        self.cpu: str | None = None
        """The CPU backend of the runs (``None``: the machine's default)."""

    # -- the decode step -------------------------------------------------------------------
    def decode(self, c: Candidate, raw: bytes) -> Decoded:
        pad = bytes(self.arch.max_insn_len)
        return self.arch.decode(raw + pad, c.addr, c.user)

    def hazard(self, c: Candidate) -> str | None:
        if not c.context:
            return None
        return self.arch.sequence_hazard(c.context + c.raw, c.addr - len(c.context), c.addr)

    # -- rejections --------------------------------------------------------------------------
    def check_reject(self, c: Candidate, reason: str) -> None:
        """A probe at a rejected instruction raises with ``reason`` and changes nothing."""
        env = Env(self.arch, c.user, code_pages(c, c.raw), set())
        self._describe(env, c)
        before = env.read(c.addr - len(c.context), len(c.context) + len(c.raw))
        try:
            self._register(env, c.addr, [])
        except UnsupportedInstruction as exc:
            if exc.reason != reason:
                raise CheckFailed(f"{c.row}/{c.case}: rejected with {exc.reason}, "
                                  f"the table says {reason}") from None
        except KprobeError as exc:
            if reason != "undecodable":
                raise CheckFailed(f"{c.row}/{c.case}: refused ({exc}), the table says "
                                  f"{reason}") from None
        else:
            raise CheckFailed(f"{c.row}/{c.case}: registered, the table says {reason}")
        after = env.read(c.addr - len(c.context), len(c.context) + len(c.raw))
        if before != after or len(env.points):
            raise CheckFailed(f"{c.row}/{c.case}: a refused probe changed memory")

    def _describe(self, env: Env, c: Candidate) -> None:
        start = c.addr - len(c.context)
        size = len(c.context) + len(c.raw)
        if self.arch.variable_length or c.context or not c.user:
            env.space.add_function(f"vector_{c.addr:x}", start, size)

    def _register(self, env: Env, addr: int, hits: list[int]) -> Any:
        builder = ProbeBuilder().with_symbol_addr(addr).with_pre_handler(
            lambda _d, _r: hits.append(1))
        if env.pid is None:
            return register_kprobe(env.manager, env.points, builder)
        return register_uprobe(env.manager, env.points, builder.with_user_mode(env.pid))

    def _unregister(self, env: Env, handle: Any) -> None:
        if env.pid is None:
            unregister_kprobe(env.manager, env.points, handle)
        else:
            unregister_uprobe(env.manager, env.points, handle)

    # -- slot placement --------------------------------------------------------------------
    def slot_address(self, c: Candidate, raw: bytes) -> int:
        """Where the manager places the slot of ``raw`` at ``c.addr`` on a fresh machine."""
        env = Env(self.arch, c.user, code_pages(c, raw), set())
        self._describe(env, c)
        handle = self._register(env, c.addr, [])
        slot = int(env.points[c.addr].slot_addr)
        self._unregister(env, handle)
        return slot

    # -- the two runs --------------------------------------------------------------------------
    def _unprobed(self, c: Candidate, raw: bytes, d: Decoded, pre: State, nxt: int,
                  extra: tuple[str, ...], pages: set[int]) -> tuple[State, list[tuple[int, bytes]],
                                                                    list[tuple[int, bytes]]]:
        code = code_pages(c, raw)
        env = Env(self.arch, c.user, code, pages | {page_of(nxt)}, self.cpu)
        env.set_state(pre)
        reads, writes, stop = env.trace()
        snapshot = {b: env.read(b, PAGE) for b in sorted(pages | set(code))}
        try:
            env.run(c.addr, nxt, 1)
        finally:
            stop()
        post = env.state(extra)
        pre_mem = [(a, _bytes_of(snapshot, a, e - a)) for a, e in _regions(reads + writes)
                   if page_of(a) in snapshot and page_of(e - 1) in snapshot]
        post_mem = [(a, env.read(a, e - a)) for a, e in _regions(writes)]
        return post, pre_mem, post_mem

    def _probed(self, c: Candidate, raw: bytes, d: Decoded, pre: State, nxt: int,
                extra: tuple[str, ...], pages: set[int]) -> tuple[State, dict[int, bytes],
                                                                  dict[str, Any]]:
        code = code_pages(c, raw)
        env = Env(self.arch, c.user, code, pages | {page_of(nxt)}, self.cpu)
        self._describe(env, c)
        hits: list[int] = []
        handle = self._register(env, c.addr, hits)
        point = env.points[c.addr]
        slot = self._slot(point, c, env)
        env.set_state(pre)
        try:
            env.run(c.addr, nxt, 64)
        finally:
            post = env.state(extra)
            self._unregister(env, handle)
        if len(hits) != 1:
            raise CheckFailed(f"{c.row}/{c.case}: the probe hit {len(hits)} times")
        for base, content in code.items():
            if env.read(base, PAGE) != content:
                raise CheckFailed(f"{c.row}/{c.case}: code not restored after unregister")
        seen = pages | set(code) | {page_of(nxt)}
        return post, {b: env.read(b, PAGE) for b in sorted(seen)}, slot

    def _slot(self, point: Any, c: Candidate, env: Env) -> dict[str, Any]:
        if point.plan is None:
            return {}
        plan, at = point.plan, int(point.slot_addr)
        again = self.arch.build_slot(point.decoded, at, c.user)
        if again.code != plan.code or env.read(at, len(plan.code)) != plan.code:
            raise CheckFailed(f"{c.row}/{c.case}: slot bytes differ from build_slot's")
        slot: dict[str, Any] = {
            "slot_addr": hexint(at),
            "slot_bytes": plan.code.hex(),
            "slot_break_offset": getattr(plan, "break_offset", None),
            "resume_addr": hexint(c.addr + plan.resume_delta),
        }
        if plan.scratch is not None:
            slot["slot_scratch"] = {"reg": plan.scratch, "value": hexint(plan.scratch_value)}
        return slot

    def run_state(self, c: Candidate, raw: bytes, d: Decoded, pre: State) -> Outcome | None:
        """Run one pre state unprobed and probed; the agreed outcome, or ``None`` when the
        state cannot run (a fault, an unmappable address)."""
        code = code_pages(c, raw)
        expected: State | None = None
        rule_reads: list[tuple[int, int]] = []
        extra: tuple[str, ...] = ()
        if d.verdict is Verdict.SIMULATE:
            expected, rec = apply_rule(self.arch, d, pre, code)
            nxt = expected.regs[self.arch.regs_class.PC]
            rule_reads = rec.reads
            if any(a < c.addr + len(raw) and c.addr < a + n for a, n in rule_reads):
                return None  # a literal load of its own bytes would read the breakpoint
            extra = tuple(expected.extra)
            pre = replace(pre, extra={k: _extra_value(c, k) for k in extra})
            expected, rec = apply_rule(self.arch, d, pre, code)
        else:
            nxt = (c.addr + len(raw)) & _MASK
        if nxt >= MAPPABLE or nxt == c.addr:
            return None  # unmappable, or a branch to itself (a probe there hits forever)
        start_pages = {page_of(a) for a, n in rule_reads} | {page_of(a + n - 1)
                                                              for a, n in rule_reads}
        start_pages = {p for p in start_pages if p < MAPPABLE}

        def body(pages: set[int]) -> Outcome:
            try:
                post, pre_mem, post_mem = self._unprobed(c, raw, d, pre, nxt, extra, pages)
            except StepLimitExceeded as exc:
                raise CheckFailed(f"{c.row}/{c.case}: the CPU went to {exc.pc:#x}, the rule "
                                  f"says {nxt:#x}") from None
            try:
                probed, probed_pages, slot = self._probed(c, raw, d, pre, nxt, extra, pages)
            except GuestFault as exc:
                if _mappable_miss(exc, pages):
                    raise
                raise CheckFailed(f"{c.row}/{c.case}: probed run faulted ({exc}), the "
                                  "unprobed one did not") from None
            except StepLimitExceeded as exc:
                raise CheckFailed(f"{c.row}/{c.case}: the probed run did not reach "
                                  f"{nxt:#x} ({exc})") from None
            if probed != post:
                raise CheckFailed(f"{c.row}/{c.case}: probed {probed} != unprobed {post}")
            for a, content in post_mem:
                if _bytes_of(probed_pages, a, len(content)) != content:
                    raise CheckFailed(f"{c.row}/{c.case}: probed memory differs at {a:#x}")
            if expected is not None and (expected.regs, expected.flags, expected.extra) != (
                    post.regs, post.flags, post.extra):
                raise CheckFailed(f"{c.row}/{c.case}: the rule gives {expected} and the CPU "
                                  f"{post}")
            return Outcome(replace(pre, mem=pre_mem), replace(post, mem=post_mem), slot)

        return _with_lazy_pages(body, start_pages)

    # -- a candidate's vectors ------------------------------------------------------------------
    def next_pc(self, c: Candidate, d: Decoded, pre: State) -> int:
        if d.verdict is not Verdict.SIMULATE:
            return c.addr + d.length
        post, _ = apply_rule(self.arch, d, pre, code_pages(c, d.raw))
        return post.regs[self.arch.regs_class.PC]

    def outcomes(self, c: Candidate, raw: bytes, d: Decoded) -> list[Outcome]:
        """One outcome per distinct kind of next PC (falls through, goes elsewhere).  Rows
        unicorn gets wrong (:data:`UNICORN_DEFECTS`) run on the P-code CPU."""
        if (self.arch.name, d.klass) not in UNICORN_DEFECTS:
            return self._outcomes(c, raw, d)
        self.cpu = "pcode"
        try:
            return self._outcomes(c, raw, d)
        finally:
            self.cpu = None

    def _outcomes(self, c: Candidate, raw: bytes, d: Decoded) -> list[Outcome]:
        found: dict[bool, Outcome] = {}
        tried: set[bool] = set()
        for n in range(DRAWS):
            pre = draw_state(self.arch, c, n)
            through = self.next_pc(c, d, pre) == c.addr + d.length
            if through in found:
                continue
            tried.add(through)
            got = self.run_state(c, raw, d, pre)
            if got is not None:
                found[through] = got
            if d.verdict is Verdict.STEP_OUT_OF_LINE and found:
                break
        return [found[k] for k in sorted(found, reverse=True)]


def _extra_value(c: Candidate, name: str) -> int:
    """A deterministic 128-bit pre value for state outside ``pt_regs`` that a rule writes
    (an aarch64 V register), so a port that writes only part of it is caught."""
    digest = hashlib.sha256(f"{c.raw.hex()}:{c.addr:#x}:{name}".encode()).digest()
    return int.from_bytes(digest[:16], "little")


def _bytes_of(pages: Mapping[int, bytes], addr: int, n: int) -> bytes:
    out = bytearray()
    for i in range(n):
        base = page_of(addr + i)
        out.append(pages[base][addr + i - base])
    return bytes(out)


def vectors_for(checker: Checker, c: Candidate) -> Iterator[dict[str, Any]]:
    """The checked vectors of candidate ``c`` (none if no drawn state can run)."""
    raw = c.raw
    if c.disp_at_slot is not None:
        raw = _aim_displacement(checker, c)
    d = checker.decode(c, raw)
    if d.klass != "undecodable":
        raw = d.raw  # the one instruction (the decoder keeps one byte of undecodable bytes)
    reason = checker.hazard(c) or (d.reason if d.verdict is Verdict.REJECT else None)
    head = _head(c, raw, d)
    if reason is None and c.reason is not None and d.verdict is not Verdict.REJECT:
        reason, slot = _probe_reason(checker, replace(c, raw=raw))
        if slot is not None:
            head["slot_addr"] = hexint(slot)
    if reason is not None:
        checker.check_reject(replace(c, raw=raw), reason)
        yield {**head, "verdict": "reject", "reason": reason}
        return
    for out in checker.outcomes(c, raw, d):
        out.post.regs = changed(checker.arch, out.pre, out.post)
        yield {**head, "verdict": d.verdict.value, "reason": d.reason, **out.slot,
               "pre": state_json(out.pre), "post": state_json(out.post)}


def changed(arch: ArchOps, pre: State, post: State) -> dict[str, int]:
    """The registers a vector's ``post`` lists: the PC and every register that changed."""
    pc = arch.regs_class.PC
    return {k: v for k, v in post.regs.items() if k == pc or pre.regs.get(k) != v}


def _probe_reason(checker: Checker, c: Candidate) -> tuple[str | None, int | None]:
    """The reason a registration is refused for (a relocation out of reach) and the slot
    address the manager tried: where it places the slot of the same instruction with a
    zero displacement (placement does not depend on the displacement).  ``(None, None)``
    when the registration succeeds."""
    try:
        checker.slot_address(c, c.raw)
    except UnsupportedInstruction as exc:
        off = checker.decode(c, c.raw).fields.get("disp_offset")
        if off is None:
            return exc.reason, None
        zeroed = c.raw[:off] + bytes(4) + c.raw[off + 4:]
        return exc.reason, checker.slot_address(c, zeroed)
    return None, None


def _head(c: Candidate, raw: bytes, d: Decoded) -> dict[str, Any]:
    row = c.row if c.reason or c.context else d.klass
    head: dict[str, Any] = {
        "schema": SCHEMA_VERSION, "kind": "kprobe", "id": "", "isa": c.isa, "row": row,
        "case": c.case, "bytes": raw.hex(), "addr": hexint(c.addr), "user": c.user,
        "text": d.text,
    }
    if row != c.row:
        head["target_row"] = c.row
    if c.context:
        head["context"] = {"addr": hexint(c.addr - len(c.context)), "bytes": c.context.hex()}
    return head


def _aim_displacement(checker: Checker, c: Candidate) -> bytes:
    """x86_64: the candidate's bytes with a disp32 that relocates to ``c.disp_at_slot``."""
    assert c.disp_at_slot is not None
    d = checker.decode(c, c.raw)
    off = d.fields["disp_offset"]
    slot = checker.slot_address(c, c.raw)
    disp = (c.disp_at_slot + slot - c.addr) & 0xFFFF_FFFF
    return c.raw[:off] + disp.to_bytes(4, "little") + c.raw[off + 4:]
