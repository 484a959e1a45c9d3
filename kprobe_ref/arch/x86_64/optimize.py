"""x86_64 jump-optimized probes: the region a ``jmp rel32`` replaces and its detour buffer.

Mirrors Linux ``arch/x86/kernel/kprobes/opt.c`` (``can_optimize``,
``copy_optimized_instructions``, ``arch_prepare_optimized_kprobe``,
``insn_jump_into_range``, ``insn_is_indirect_jump``).  The rules:

- The region starts at the probe and takes whole instructions until it holds the 5 bytes of
  ``jmp rel32`` (Linux's ``JMP32_INSN_SIZE``); it must end inside the function
  (``region-crosses-function-end``).
- Every instruction of the region is stepped out of line (never simulated or refused) and
  passes :func:`~kprobe_ref.arch.x86_64.slot.boost_refusal`, this project's ``can_boost``
  (``region-not-boostable``): it runs unchanged apart from a RIP-relative displacement, and
  falls through to the next instruction.
- The whole function, from its symbol's start to its end, decodes
  (``function-undecodable``), and no direct branch of it (``jcc``, ``jmp``, ``call``,
  ``loop``, ``jrcxz``) targets an address inside the region after its first byte
  (``jump-target-in-region``): the jump's tail would be executed as code.
- A function with an indirect jump whose targets are not known (``jmp`` through a
  register, a far ``jmp``, a control transfer the decode table does not classify, or a
  ``jmp`` through memory that is not a readable jump table) is refused whole
  (``indirect-jump-in-function``), as Linux's ``insn_is_indirect_jump`` refuses every
  indirect jump.  This reference reads one kind of table, the one compilers emit for a
  ``switch`` in code linked at a fixed address: ``jmp [index*8 + table]`` with no base
  register.  Its entries are read from ``table`` on while they point at code
  (:func:`table_targets`); every entry the CPU can use does, so reading on until one
  does not collects all of them and perhaps some of what follows the table, which only
  refuses more.  A table whose first entry is not code, or that cannot be read, counts
  as unknown.  Tables are assumed to sit in read-only data, as compilers place them and
  the kernel maps them.
- The detour is the host-call site (one ``int3`` byte the host intercepts before it
  executes; a CPU that ever executed it would take a breakpoint no probe owns, a loud
  failure), each region instruction with its RIP-relative displacement rewritten for its
  place in the detour (``rip-relative-out-of-reach`` when that does not fit), and
  ``jmp rel32`` to the instruction after the region; both jumps must reach
  (``detour-out-of-reach``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from kprobe_ref import bits
from kprobe_ref.arch.base import Decoded, OptPlan, OptRegion, Reader, Verdict
from kprobe_ref.arch.x86_64.decode import decode
from kprobe_ref.arch.x86_64.encoding import BASE_NONE, parse
from kprobe_ref.arch.x86_64.slot import (
    boost_refusal,
    jump_reaches,
    jump_rel32_field,
    rewrite_displacement,
)

__all__ = ["ENTRY", "JUMP_SIZE", "MAX_TABLE", "Flow", "build_detour", "flow", "plan_region",
           "table_targets"]

JUMP_SIZE = 5
"""``jmp rel32``: the bytes the region must hold (Linux's ``JMP32_INSN_SIZE``)."""
ENTRY = b"\xcc"
"""The detour's host-call site."""

RELATIVE = frozenset({"jcc_rel8", "jcc_rel32", "jmp_rel8", "jmp_rel32", "call_rel32",
                      "loop", "loope", "loopne", "jrcxz"})
"""Decode classes with a direct target: ``next_ip + sext(disp)``."""
INDIRECT = frozenset({"jmp_ind_reg", "jmp_ind_mem", "jmp_far_ind", "jmp_far",
                      "unclassified_flow"})
"""Decode classes whose target is not in the instruction: a function holding one is not
optimized unless it is a jump table this module reads."""
MAX_TABLE = 4096
"""The most jump-table entries read."""


@dataclass(frozen=True)
class Flow:
    """The decoded control flow of one function."""

    insns: tuple[Decoded, ...]
    targets: frozenset[int]
    """Every direct branch target."""
    indirect: int | None
    """Address of the first indirect jump that is not a jump table, if any."""
    tables: tuple[int, ...]
    """The addresses of the jump tables the function's indirect jumps go through."""
    stuck: int | None
    """Where decoding failed, if it did."""


def branch_target(d: Decoded) -> int | None:
    """The target of a direct branch (``None`` for any other instruction)."""
    if d.klass not in RELATIVE or d.verdict is Verdict.REJECT:
        return None
    f = d.fields
    target = bits.add(d.address + f["len"], bits.sext(f["disp"], f["dsize"]))
    assert isinstance(target, int)
    return target


def jump_table(d: Decoded) -> int | None:
    """The table address of ``jmp [index*8 + disp32]`` (no base register, no segment
    override: the decode table refuses ``fs``/``gs`` on it), else ``None``."""
    f = d.fields
    if d.klass != "jmp_ind_mem" or f.get("base") != BASE_NONE or f.get("scale") != 8 \
            or f.get("index", BASE_NONE) == BASE_NONE:
        return None
    table = bits.sext(f["mdisp"], 32)
    assert isinstance(table, int)
    return table & bits.mask(64)


@lru_cache(maxsize=512)
def flow(code: bytes, start: int) -> Flow:
    """Decode the function ``code`` located at ``start`` and collect its branch targets
    and jump tables.  Cached: optimizing many probes of one function decodes it once."""
    insns: list[Decoded] = []
    targets: set[int] = set()
    tables: list[int] = []
    indirect: int | None = None
    off, stuck = 0, None
    while off < len(code):
        d = decode(code[off:off + 15], start + off)
        if d.klass == "undecodable":
            stuck = start + off
            break
        insns.append(d)
        target, table = branch_target(d), jump_table(d)
        if target is not None:
            targets.add(target)
        if table is not None:
            tables.append(table)
        elif d.klass in INDIRECT and indirect is None:
            indirect = d.address
        off += d.length
    return Flow(tuple(insns), frozenset(targets), indirect, tuple(tables), stuck)


def table_targets(table: int, start: int, end: int, mem: Reader) -> list[int] | None:
    """The entries of the jump table at ``table`` that point into the function
    ``[start, end)``, or ``None`` when the table is not known.  Entries are read on while
    they point at code (at most :data:`MAX_TABLE`): every entry of a real table does
    (including one into a ``.cold`` part outside the function), so all of them are read,
    with perhaps some of whatever follows, which only adds targets.  Unknown: the first
    entry is not readable or not code, or the limit is reached."""
    out: list[int] = []
    for i in range(MAX_TABLE):
        raw = mem.read(table + 8 * i, 8)
        entry = None if raw is None else int.from_bytes(raw, "little")
        if entry is None or not mem.executable(entry):
            return out if i else None
        if start <= entry < end:
            out.append(entry)
    return None


def _region(f: Flow, addr: int) -> list[Decoded] | str:
    """The instructions of the region starting at ``addr`` (or why there is none)."""
    out: list[Decoded] = []
    size = 0
    for d in f.insns:
        if d.address < addr:
            continue
        if not out and d.address != addr:
            return "not-instruction-boundary"
        out.append(d)
        size += d.length
        if size >= JUMP_SIZE:
            return out
    return "region-crosses-function-end"


def _refusal(d: Decoded) -> str | None:
    if d.verdict is not Verdict.STEP_OUT_OF_LINE:
        return "region-not-boostable"
    insn = parse(d.raw, d.address)
    if insn is None or boost_refusal(insn) is not None:
        return "region-not-boostable"
    return None


def plan_region(code: bytes, start: int, addr: int, mem: Reader) -> OptRegion | str:
    """The instructions a jump at ``addr`` would replace in the function ``code`` (located
    at ``start``; its jump tables are read from ``mem``), or the reason code refusing it
    (see the module docstring)."""
    f = flow(code, start)
    if f.stuck is not None:
        return "function-undecodable"
    region = _region(f, addr)
    if isinstance(region, str):
        return region
    for d in region:
        why = _refusal(d)
        if why is not None:
            return why
    end = region[-1].address + region[-1].length
    if any(addr < t < end for t in f.targets):
        return "jump-target-in-region"
    if f.indirect is not None:
        return "indirect-jump-in-function"
    for table in f.tables:
        entries = table_targets(table, start, start + len(code), mem)
        if entries is None:
            return "indirect-jump-in-function"
        if any(addr < t < end for t in entries):
            return "jump-target-in-region"
    return OptRegion(tuple(region))


def _jump(at: int, target: int) -> bytes | None:
    if not jump_reaches(at, target):
        return None
    field = jump_rel32_field(at, target)
    assert isinstance(field, int)
    return b"\xe9" + field.to_bytes(4, "little")


def _relocate(d: Decoded, at: int) -> bytes | None:
    if "disp_offset" not in d.fields:
        return d.raw
    try:
        return rewrite_displacement(d.raw, d.fields["disp_offset"], d.address, at)
    except OverflowError:
        return None


def build_detour(region: OptRegion, addr: int, detour: int) -> OptPlan | str:
    """The plan of a jump at ``addr`` over ``region`` to a detour at ``detour``, or the
    reason code refusing it."""
    code = bytearray(ENTRY)
    starts, copies = [], []
    for d in region.insns:
        moved = _relocate(d, detour + len(code))
        if moved is None:
            return "rip-relative-out-of-reach"
        starts.append(d.address - addr)
        copies.append(len(code))
        code += moved
    size = region.end - addr
    back = _jump(detour + len(code), (addr + size) & bits.mask(64))
    jump = _jump(addr, detour)
    if back is None or jump is None:
        return "detour-out-of-reach"
    plan_back = len(code)
    code += back
    return OptPlan(size, tuple(starts), jump, bytes(code), len(ENTRY), tuple(copies),
                   plan_back)
