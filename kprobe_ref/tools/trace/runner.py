"""The machine side of ``kprobe-ref trace``: load the image, make the calls, print.

:class:`Runner` owns a :class:`~kprobe_ref.sim.Machine` with the kernel image loaded and a
:class:`~kprobe_ref.tools.trace.session.TraceSession` on it.  :meth:`Runner.call` makes one
``--call``; :meth:`Runner.flush` prints the buffer in ftrace format (or JSON), the calls
made, and the profile.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TextIO

from kprobe_ref.errors import InvalidProbeDefinition
from kprobe_ref.sim.elf import Image
from kprobe_ref.sim.errors import MachineError
from kprobe_ref.sim.machine import Machine
from kprobe_ref.tools.trace.format import HEADER, format_json, format_line, profile_lines

__all__ = ["Runner"]


@dataclass
class Runner:
    """One ``trace`` run."""

    machine: Machine
    calls: list[tuple[str, int]] = field(default_factory=list)
    failure: str = ""
    skipped: list[str] = field(default_factory=list)
    """Segments of the image not loaded because the machine's own pages are there."""

    def __post_init__(self) -> None:
        from kprobe_ref.tools.trace.session import TraceSession

        self.session = TraceSession(self.machine)
        self._heap: dict[int, int] = {}

    @classmethod
    def create(cls, arch: str | None, image: str | None) -> Runner:
        """A machine for ``arch`` with ``image`` (default: the bundled kernel image)."""
        from kprobe_ref.arch import ARCHES
        from kprobe_ref.sim.elf import read_image
        from kprobe_ref.tools.verify import bundled_image

        if arch is not None and arch not in ARCHES:
            raise InvalidProbeDefinition(
                f"unknown ISA {arch!r} (known: {', '.join(sorted(ARCHES))})"
            )
        if image is None:
            m = Machine(arch or "x86_64")
            m.load_elf(bundled_image(arch or "x86_64"))
            return cls(m)
        loaded = read_image(image, arch)
        m = Machine(loaded.isa)
        runner = cls(m)
        runner.skipped = _load_around(m, loaded)
        runner.session = type(runner.session)(m)
        return runner

    # -- calls ---------------------------------------------------------------------------------
    def _function(self, name: str, pid: int | None) -> int:
        addrs = self.machine.lookup_symbol(name, pid)
        where = "the kernel image" if pid is None else f"process {pid}"
        if not addrs:
            raise InvalidProbeDefinition(f"--call: no function {name!r} in {where}")
        if len(addrs) > 1:
            raise InvalidProbeDefinition(f"--call: {name!r} is not unique in {where}")
        return addrs[0]

    def _pointer(self, data: bytes, pid: int | None) -> int:
        """Copy ``data`` into fresh memory of the kernel or of process ``pid``."""
        if pid is None:
            addr = self.machine.alloc(len(data))
            self.machine.write(addr, data)
            return addr
        space = self.machine.process(pid).space
        addr = self._heap.get(pid, 0x2000_0000)
        size = (len(data) + 0xFFF) & ~0xFFF
        space.map(addr, size, "rw")
        space.write(addr, data, enforce=False)
        self._heap[pid] = addr + size + 0x1000
        return addr

    def call(self, text: str) -> int:
        """Make one ``--call``; 0, or 1 when the guest faulted (recorded in ``failure``)."""
        from kprobe_ref.tools.trace.command import parse_call

        path, func, raw = parse_call(text)
        pid = None if path is None else self.session.spawn(path)
        addr = self._function(func, pid)
        args = [self._pointer(a, pid) if isinstance(a, bytes) else a for a in raw]
        try:
            if pid is None:
                ret = self.machine.call(addr, *args)
            else:
                ret = self.machine.call_user(pid, addr, *args)
        except MachineError as exc:
            self.failure = f"trace: --call {text}: {exc}"
            return 1
        self.calls.append((text, ret))
        return 0

    # -- output -----------------------------------------------------------------------------------
    def flush(self, out: TextIO, as_json: bool) -> None:
        """Print the recorded events, the calls and the profile."""
        sym = self.session.symbols.symbolize
        records = self.session.records
        kern, user = self.session.profile()
        if as_json:
            for r in records:
                print(format_json(r, sym), file=out)
            import json

            for text, ret in self.calls:
                print(json.dumps({"type": "call", "call": text, "return": ret}), file=out)
            for name, hit, miss in kern:
                print(json.dumps({"type": "profile", "event": name, "hits": hit,
                                  "misses": miss}), file=out)
            for path, name, hit in user:
                print(json.dumps({"type": "profile", "file": path, "event": name,
                                  "hits": hit}), file=out)
            return
        out.write(HEADER.format(n=len(records)))
        for note in self.skipped:
            print(f"# not loaded: {note}", file=out)
        for r in records:
            print(format_line(r, sym), file=out)
        for text, ret in self.calls:
            print(f"# call {text} returned {ret:#x}", file=out)
        for line in profile_lines(kern, user):
            print(line, file=out)



def _load_around(m: Machine, image: Image) -> list[str]:
    """Load ``image`` into the kernel space, leaving out the segments that overlap the
    machine's own pages (a distribution vmlinux links its per-CPU data at address 0, where
    the machine keeps its return-stop page); returns what was left out."""
    from kprobe_ref.sim.elf import load_image

    space = m.kernel
    kept, skipped = [], []
    for seg in image.segments:
        if space.is_free(seg.vaddr, max(seg.memsz, 1)):
            kept.append(seg)
        else:
            skipped.append(f"segment {seg.vaddr:#x}..{seg.vaddr + seg.memsz:#x} "
                           f"({seg.perms}) overlaps the machine's own memory")
    image.segments = kept
    load_image(space, image)
    m.images.append(image)
    return skipped
