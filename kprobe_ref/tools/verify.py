"""Running functions of an image and checking that a probe changes nothing.

The check behind ``kprobe-ref demo``, the audit and the corpus properties: a probe at an
instruction must leave the function's return value and the memory it can write (its buffer
arguments and the image's writable segments) exactly as the unprobed run leaves them, and
its hit count must equal the number of times the instruction executes unprobed (counted by
the CPU's code hook).

Inputs use the format of ``kprobe_ref/corpus/functions.json`` (also the audit's ``--inputs``
file): for each function, ``args`` lists ``"int"`` or ``"buf"`` and ``cases`` lists argument
lists, an ``int`` argument a JSON integer (taken modulo 2**64), a ``buf`` argument an object
``{"hex": "<initial bytes>", "size": N}`` (size optional, at least 256): the caller passes
the address of a zeroed buffer holding those bytes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kprobe_ref.arch import instruction_starts
from kprobe_ref.corpus import bundled_image, corpus_dir
from kprobe_ref.errors import InvalidProbeDefinition, KprobeError
from kprobe_ref.manager import register_kprobe, unregister_kprobe
from kprobe_ref.probe import ProbeBuilder
from kprobe_ref.ptregs import PtRegs
from kprobe_ref.sim.errors import MachineError
from kprobe_ref.sim.machine import Machine
from kprobe_ref.sim.space import page_up

__all__ = [
    "Buffer",
    "Case",
    "FunctionSpec",
    "Outcome",
    "Runner",
    "SiteResult",
    "bundled_image",
    "bundled_specs",
    "load_specs",
]

BUFFER_SLOTS = 8
MIN_BUFFER = 256
RUN_STEPS = 2_000_000


@dataclass(frozen=True)
class Buffer:
    """A buffer argument: initial contents and size."""

    data: bytes
    size: int


Arg = int | Buffer


@dataclass(frozen=True)
class Case:
    """One argument list."""

    args: tuple[Arg, ...]


@dataclass(frozen=True)
class FunctionSpec:
    """How to call one function."""

    name: str
    kinds: tuple[str, ...]
    cases: tuple[Case, ...]
    callable: bool = True
    isas: tuple[str, ...] | None = None
    note: str = ""


def _parse_arg(kind: str, value: Any, where: str) -> Arg:
    if kind == "int":
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidProbeDefinition(f"{where}: expected an integer, got {value!r}")
        return value
    if kind == "buf":
        if not isinstance(value, dict) or not isinstance(value.get("hex", ""), str):
            raise InvalidProbeDefinition(f"{where}: expected {{\"hex\": ...}}, got {value!r}")
        try:
            data = bytes.fromhex(value.get("hex", ""))
        except ValueError:
            raise InvalidProbeDefinition(f"{where}: 'hex' is not hexadecimal") from None
        size = value.get("size", MIN_BUFFER)
        if not isinstance(size, int) or size < len(data) or size > 1 << 20:
            raise InvalidProbeDefinition(f"{where}: bad buffer size {size!r}")
        return Buffer(data, max(size, MIN_BUFFER, len(data)))
    raise InvalidProbeDefinition(f"{where}: unknown argument kind {kind!r} (int or buf)")


def _check_spec_shape(name: str, raw: Any) -> None:
    """The JSON types of one spec's fields: ``args`` a list of strings, ``cases`` a list,
    ``isas`` a list of ISA names, ``callable`` a boolean, ``note`` a string."""
    if not isinstance(raw, dict) or not isinstance(raw.get("args"), list):
        raise InvalidProbeDefinition(f"{name}: expected an object with an 'args' list")
    if not all(isinstance(k, str) for k in raw["args"]):
        raise InvalidProbeDefinition(f"{name}: 'args' must list \"int\" or \"buf\"")
    if not isinstance(raw.get("cases", []), list):
        raise InvalidProbeDefinition(f"{name}: 'cases' must be a list of argument lists")
    isas = raw.get("isas")
    if isas is not None and (
        not isinstance(isas, list) or not all(isinstance(i, str) for i in isas)
    ):
        raise InvalidProbeDefinition(f"{name}: 'isas' must be a list of ISA names")
    if not isinstance(raw.get("callable", True), bool):
        raise InvalidProbeDefinition(f"{name}: 'callable' must be true or false")
    if not isinstance(raw.get("note", ""), str):
        raise InvalidProbeDefinition(f"{name}: 'note' must be a string")


def _parse_spec(name: str, raw: Any) -> FunctionSpec:
    _check_spec_shape(name, raw)
    kinds = tuple(str(k) for k in raw["args"])
    if len(kinds) > BUFFER_SLOTS or kinds.count("buf") > BUFFER_SLOTS:
        raise InvalidProbeDefinition(f"{name}: too many arguments")
    cases = []
    for i, case in enumerate(raw.get("cases", [])):
        if not isinstance(case, list) or len(case) != len(kinds):
            raise InvalidProbeDefinition(f"{name} case {i}: expected {len(kinds)} arguments")
        args = tuple(_parse_arg(k, v, f"{name} case {i}") for k, v in zip(kinds, case, strict=True))
        cases.append(Case(args))
    isas = raw.get("isas")
    return FunctionSpec(name, kinds, tuple(cases), bool(raw.get("callable", True)),
                        tuple(isas) if isas else None, str(raw.get("note", "")))


def load_specs(text: str) -> dict[str, FunctionSpec]:
    """Parse an inputs file (JSON object: function name -> spec)."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidProbeDefinition(f"inputs are not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidProbeDefinition("inputs are nested too deeply") from None
    if not isinstance(raw, dict):
        raise InvalidProbeDefinition("inputs must be a JSON object of function specs")
    return {name: _parse_spec(name, spec) for name, spec in raw.items()}


def bundled_specs(isa: str | None = None) -> dict[str, FunctionSpec]:
    """The bundled corpus's function specs (only those that exist on ``isa``)."""
    specs = load_specs((corpus_dir() / "functions.json").read_text())
    return {n: s for n, s in specs.items() if isa is None or s.isas is None or isa in s.isas}


@dataclass(frozen=True)
class Outcome:
    """What one run left behind."""

    ret: int | None
    memory: tuple[bytes, ...]
    error: str | None = None


@dataclass
class SiteResult:
    """The verdict of probing one instruction over all cases of its function."""

    address: int
    hits: int = 0
    expected_hits: int = 0
    divergences: list[str] = field(default_factory=list)
    rejected: str | None = None
    """The rejection's reason code, if the probe could not be registered."""

    @property
    def ok(self) -> bool:
        return not self.divergences


class Runner:
    """A machine with one image loaded, ready to run its functions repeatedly from the same
    initial memory."""

    def __init__(self, isa: str, image: Path | str, cpu: str | None = None) -> None:
        self.m = Machine(isa, cpu)
        self.m.cpu.counting = False  # a verified run needs results, not instruction counts
        self.image = self.m.load_elf(image)
        self.buffers = [self.m.alloc(page_up(MIN_BUFFER * 16)) for _ in range(BUFFER_SLOTS)]
        self.buffer_size = page_up(MIN_BUFFER * 16)
        self._writable = [(s.vaddr, s.data + bytes(s.memsz - len(s.data)))
                          for s in self.image.segments if "w" in s.perms]
        self._dirty = set(range(len(self._writable)))
        """Writable segments that may differ from the image (rewritten before a run)."""
        self.initial_regs = self.m.regs()
        """The registers every run starts from (the CPU's reset values)."""

    def instructions(self, name: str) -> list[int]:
        """The addresses of the instructions of function ``name``, in order."""
        start, size = self.image.functions[name], self.image.sizes[name]
        code = self.m.points.overlay_original(start, self.m.read(start, size))
        return list(instruction_starts(self.m.isa, start, code)[0])

    def _reset(self, case: Case) -> list[int]:
        for i in sorted(self._dirty):
            vaddr, initial = self._writable[i]
            self.m.write(vaddr, initial)
        self._dirty = set(range(len(self._writable)))  # until the run's end reads them
        self.m.set_regs(self.initial_regs)
        ints, slot = [], 0
        for arg in case.args:
            if isinstance(arg, Buffer):
                addr = self.buffers[slot]
                self.m.write(addr, arg.data + bytes(self.buffer_size - len(arg.data)))
                ints.append(addr)
                slot += 1
            else:
                ints.append(arg)
        return ints

    def _memory(self, case: Case) -> tuple[bytes, ...]:
        nbuf = sum(isinstance(a, Buffer) for a in case.args)
        bufs = [self.m.read(self.buffers[i], self.buffer_size) for i in range(nbuf)]
        segs = [self.m.read(vaddr, len(initial)) for vaddr, initial in self._writable]
        self._dirty = {i for i, (seg, (_, initial)) in enumerate(zip(segs, self._writable,
                                                                     strict=True))
                       if seg != initial}
        return (*bufs, *segs)

    def run(self, name: str, case: Case, max_steps: int = RUN_STEPS) -> Outcome:
        """Call ``name`` with the case's arguments from the image's initial memory."""
        ints = self._reset(case)
        try:
            ret = self.m.call(self.image.functions[name], *ints, max_steps=max_steps)
        except MachineError as exc:
            return Outcome(None, self._memory(case), f"{type(exc).__name__}: {exc}")
        return Outcome(ret, self._memory(case))

    def baseline(self, name: str, cases: Sequence[Case]) -> tuple[list[Outcome], dict[int, int]]:
        """Unprobed outcomes and, per instruction address, how often it executed in all."""
        addrs = set(self.instructions(name))
        counts = self.m.watch(addrs)
        counts.clear()
        outcomes = [self.run(name, c) for c in cases]
        totals = {a: counts.get(a, 0) for a in addrs}
        self.m.cpu.watch -= addrs
        counts.clear()
        return outcomes, totals

    def probe_site(self, name: str, addr: int, cases: Sequence[Case],
                   baseline: Sequence[Outcome], expected_hits: int) -> SiteResult:
        """Probe ``addr``, run every case, compare with the baseline, unprobe."""
        result = SiteResult(addr, expected_hits=expected_hits)
        hits: list[int] = []

        def count(_data: object, _regs: PtRegs) -> None:
            hits.append(1)

        before = self.m.read(addr, 16)
        try:
            h = register_kprobe(self.m.manager, self.m.points,
                                ProbeBuilder().with_symbol_addr(addr).with_pre_handler(count))
        except KprobeError as exc:
            result.rejected = getattr(exc, "reason", type(exc).__name__)
            return result
        try:
            for i, (case, want) in enumerate(zip(cases, baseline, strict=True)):
                got = self.run(name, case)
                if got != want:
                    result.divergences.append(_describe(i, want, got))
        finally:
            unregister_kprobe(self.m.manager, self.m.points, h)
        result.hits = len(hits)
        if result.hits != expected_hits:
            result.divergences.append(f"hit {result.hits} times, executes {expected_hits}")
        if self.m.read(addr, 16) != before:
            result.divergences.append("original bytes not restored")
        return result

    def sweep(self, name: str, cases: Sequence[Case]) -> Iterator[SiteResult]:
        """Probe every instruction of ``name`` in turn."""
        baseline, totals = self.baseline(name, cases)
        for addr in self.instructions(name):
            yield self.probe_site(name, addr, cases, baseline, totals[addr])


def _describe(i: int, want: Outcome, got: Outcome) -> str:
    if want.error != got.error:
        return f"case {i}: {got.error or 'ran'} (unprobed: {want.error or 'ran'})"
    if want.ret != got.ret:
        return f"case {i}: returned {got.ret!r}, unprobed {want.ret!r}"
    return f"case {i}: memory differs"
