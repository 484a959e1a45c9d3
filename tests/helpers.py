"""Shared test helpers: run a few instructions on a fresh machine, probed or not."""

from __future__ import annotations

from dataclasses import dataclass

from kprobe_ref import ProbeBuilder, PtRegs, register_kprobe, unregister_kprobe
from kprobe_ref.sim import GuestFault, Machine

CODE = 0x40_0000
DATA = 0x60_0000
SCRATCH_STACK = 0x70_0000

#: Each ISA's Linux kernel text address: where the bundled kernel-style corpus images are
#: linked, and the second base (beside the low ``CODE``) that snippet properties run at.
KERNEL_TEXT: dict[str, int] = {
    "x86_64": 0xFFFF_FFFF_8100_0000,
    "aarch64": 0xFFFF_8000_0800_0000,
    "riscv64": 0xFFFF_FFFF_8020_0000,
    "loongarch64": 0x9000_0000_0020_0000,
}


@dataclass
class SnippetRun:
    stop: int | None
    regs: dict[str, int]
    data: bytes
    stack: bytes
    hits: int
    fault: int | None = None


def snippet_machine(isa: str, code: bytes, code_at: int = CODE) -> Machine:
    """A machine with ``code`` mapped at ``code_at`` (rx), a data page (rw) at ``DATA`` and
    an executable stack page (rwx) at ``SCRATCH_STACK``.  Strict: a failing probe handler
    fails the test instead of being logged."""
    m = Machine(isa, strict=True)
    m.map(code_at & ~0xFFF, ((code_at & 0xFFF) + len(code) + 0xFFF) & ~0xFFF, "rx")
    m.write(code_at, code)
    m.map(DATA, 0x2000, "rw")
    m.map(SCRATCH_STACK, 0x2000, "rwx")
    m.add_symbol("snippet", code_at, len(code))
    return m


def run_snippet(
    m: Machine,
    start: int,
    regs: dict[str, int],
    stops: set[int],
    probe_at: int | None = None,
    data: bytes = b"",
    max_steps: int = 10_000,
    stack: bytes = b"",
) -> SnippetRun:
    """Run from ``start`` with ``regs`` (other registers zero) until a stop address; with
    ``probe_at``, a kprobe counts its hits there for the duration."""
    m.write(DATA, data.ljust(0x2000, b"\0"))
    m.write(SCRATCH_STACK, stack.ljust(0x2000, b"\0"))
    frame = m.arch.regs_class()
    for name, value in regs.items():
        frame.set(name, value)
    m.set_regs(frame)
    hits: list[int] = []
    handle = None
    if probe_at is not None:
        handle = register_kprobe(m.manager, m.points, ProbeBuilder().with_symbol_addr(probe_at)
                                 .with_pre_handler(lambda _d, _r: hits.append(1)))
    stop, fault = None, None
    try:
        stop = m.run(start, stops, max_steps=max_steps)
    except GuestFault as exc:
        fault = exc.pc
    finally:
        if handle is not None:
            unregister_kprobe(m.manager, m.points, handle)
    return SnippetRun(stop, m.regs().as_dict(), m.read(DATA, 0x2000),
                      m.read(SCRATCH_STACK, 0x2000), len(hits), fault)


def compare_probed(isa: str, code: bytes, regs: dict[str, int], stops: set[int],
                   probe_offset: int = 0, data: bytes = b"", code_at: int = CODE,
                   stack: bytes = b"") -> tuple[SnippetRun, SnippetRun]:
    """Run the snippet unprobed and with a probe at ``code_at + probe_offset``; assert the
    same end state and a hit; return both runs."""
    m = snippet_machine(isa, code, code_at)
    plain = run_snippet(m, code_at, regs, stops, None, data, stack=stack)
    probed = run_snippet(m, code_at, regs, stops, code_at + probe_offset, data, stack=stack)
    assert probed.stop == plain.stop
    assert probed.fault == plain.fault
    assert probed.regs == plain.regs, _diff(plain.regs, probed.regs)
    assert probed.data == plain.data
    assert probed.stack == plain.stack
    assert probed.hits >= 1
    assert m.read(code_at, len(code)) == code
    return plain, probed


def _diff(a: dict[str, int], b: dict[str, int]) -> str:
    return ", ".join(f"{k}: {a[k]:#x} != {b[k]:#x}" for k in a if a[k] != b.get(k))


def frame(isa: str, **values: int) -> PtRegs:
    m = Machine(isa)
    f = m.arch.regs_class()
    for k, v in values.items():
        f.set(k, v)
    return f


def run_to_end(m: Machine, start: int, code: bytes, probe_at: int | None,
               watch: int | None) -> tuple[int, int]:
    """Run ``code`` (mapped at ``start``) to its end.  With ``probe_at``, a counting kprobe
    sits there for the run and the original bytes are checked after it goes; with
    ``watch``, the CPU counts how often that address executes.  Returns the final PC and
    the executions seen (the probe's hits, or the CPU's count at ``watch``)."""
    hits: list[int] = []
    counts = m.watch({watch}) if watch is not None else {}
    handle = None
    if probe_at is not None:
        handle = register_kprobe(m.manager, m.points, ProbeBuilder().with_symbol_addr(probe_at)
                                 .with_pre_handler(lambda _d, _r: hits.append(1)))
    pc = m.run(start, {start + len(code)}, max_steps=10_000)
    if handle is not None:
        unregister_kprobe(m.manager, m.points, handle)
        assert m.read(start, len(code)) == code
    return pc, counts.get(watch, 0) if watch is not None else len(hits)
