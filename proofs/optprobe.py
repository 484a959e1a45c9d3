"""Jump-optimized probe obligations (``docs/optprobes.md``), x86_64 and riscv64.

The rules under test are the ISA's ``plan_optimized_region`` (which region a jump may
replace) and ``build_detour`` (the detour's contents); each obligation can be given a
replacement rule, to show that a wrong one fails.  Checked over every function of the
bundled x86_64 corpus (or the functions given):

- ``optprobe``/``no-branch-into-region``: control flow can enter a region only at its first
  byte.  The function is decoded again, independently of the rule, with capstone: every
  direct jump, call or loop contributes its target, every call its return site, a
  ``jmp [index*8 + table]`` the table's entries (read from the image while they point into
  the function), every other indirect jump a target Z3 may choose freely, and every
  indirect call any function entry (not an address inside this function after its
  start).  Z3 is asked for a target ``t`` of
  some edge with ``region start < t < region end`` for any accepted region of the
  function; the obligation is proved when there is none.
- ``optprobe``/``detour-same-state``: for accepted regions and detour placements (near,
  and at the far ends of the 32-bit reach), the detour holds the region's instructions in
  order, back to back, each byte for byte the original except a RIP-relative
  displacement, and for every probe address (with the detour at the same distance) and
  every register state, each relocated RIP-relative operand addresses what the original
  addressed (the model's ``effective_address``).  The other bytes are unchanged and their
  instructions do not read the PC (the ``decode-pc`` obligations), and every region
  instruction falls through (``boost_refusal``), so the relocated region leaves the state
  the original leaves, with the PC at the jump back.
- ``optprobe``/``jump-back-lands``: for every probe address, the jump written at the probe
  lands on the detour, the detour's last jump lands on ``probe address + region size``
  (the first instruction after the region), both are the model's ``jmp rel32`` and change
  nothing else.

Over every function of the bundled riscv64 corpus:

- ``optprobe``/``no-branch-into-region``: as on x86_64, with the function decoded by
  capstone's RISC-V decoder (branch, ``j`` and ``jal`` targets, return sites of ``jal``
  and ``jalr``, any function entry for ``jalr``'s target, any address for ``jr`` through a
  register other than ``ra``).
- ``optprobe``/``scratch-dead``: for every accepted region, a Datalog query (Z3's fixed-point
  engine) over the function's control flow, written apart from the rule's own fixed point:
  starting at the probe and stopping where the register is written, no reachable
  instruction reads the register the jump uses, no reachable exit leaves it live under the
  calling convention, and no region instruction writes it.  The table of what each
  instruction reads and writes (``arch/riscv64/optimize.effect``) is shared with the rule.
- ``optprobe``/``detour-same-state``: the detour holds the region's instructions in order,
  back to back and byte for byte (a stepped RISC-V instruction never reads the PC).
- ``optprobe``/``jumps-land``: for every even probe address, the ``auipc``+``jalr`` pair at
  the probe lands on the detour and the one at the detour's end on the first instruction
  after the region, both change no register but the dead one (the riscv64 model).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import capstone
import z3
from capstone import riscv as csrv
from capstone import x86 as csx86

from kprobe_ref import bits
from kprobe_ref.arch import get_arch
from kprobe_ref.arch.base import Decoded, OptPlan, OptRegion, Reader
from kprobe_ref.arch.riscv64 import optimize as rv_opt
from kprobe_ref.corpus import bundled_image
from kprobe_ref.models import model
from kprobe_ref.models.state import State
from kprobe_ref.models.x86_64 import MemOperand, X86Insn, effective_address
from kprobe_ref.proofs.core import Obligation, Result, prove, timed
from kprobe_ref.proofs.symstate import initial_state, same_state
from kprobe_ref.sim.elf import Image, read_image

__all__ = ["BuildRule", "Function", "PlanRule", "accepted", "corpus_functions", "edges",
           "optprobe_obligations"]

PlanRule = Callable[[bytes, int, int, Reader], "OptRegion | str"]
BuildRule = Callable[[OptRegion, int, int], "OptPlan | str"]

REACH = (1 << 31) - (1 << 20)
DELTAS = (0x1000, -0x3000, REACH, -REACH)
"""Detour distances from the probe: near on either side, and far at the allocator's reach."""
SAMPLE = 400
"""Accepted regions checked by the detour obligations (every one with a RIP-relative
operand, then a deterministic sample of the rest)."""


@dataclass(frozen=True)
class Function:
    """One function's original bytes and address, and the image's loaded bytes (where its
    jump tables are read)."""

    name: str
    start: int
    code: bytes
    segments: tuple[tuple[int, bytes, str], ...] = ()
    """The image's segments: address, bytes, permissions."""

    def read(self, addr: int, size: int) -> bytes | None:
        """``size`` bytes of the image at ``addr`` (``None`` outside its segments)."""
        for base, data, _perms in self.segments:
            if base <= addr and addr + size <= base + len(data):
                return data[addr - base:addr - base + size]
        return None

    def executable(self, addr: int) -> bool:
        """Whether ``addr`` lies in an executable segment (the function's own code when no
        segments are given)."""
        if not self.segments:
            return self.start <= addr < self.start + len(self.code)
        return any(base <= addr < base + len(data) and "x" in perms
                   for base, data, perms in self.segments)


def corpus_functions(isa: str = "x86_64") -> list[Function]:
    """Every function of the bundled kernel image of ``isa``."""
    image = read_image(bundled_image(isa), isa)
    segments = tuple((seg.vaddr, bytes(seg.data), seg.perms) for seg in image.segments)
    out = []
    for start, size, name in image.function_symbols:
        data = _image_bytes(image, start, size)
        if data is not None:
            out.append(Function(name, start, data, segments))
    return out


def _image_bytes(image: Image, start: int, size: int) -> bytes | None:
    for seg in image.segments:
        if seg.vaddr <= start and start + size <= seg.vaddr + len(seg.data):
            return bytes(seg.data[start - seg.vaddr:start - seg.vaddr + size])
    return None


def _starts(f: Function, isa: str = "x86_64") -> list[int]:
    arch = get_arch(isa)
    out, off = [], 0
    while off < len(f.code):
        n = arch.insn_length(f.code[off:], f.start + off)
        if n == 0:
            break
        out.append(f.start + off)
        off += n
    return out


def accepted(f: Function, rule: PlanRule, isa: str = "x86_64"
             ) -> Iterator[tuple[int, OptRegion]]:
    """Every (probe address, region) the rule accepts in ``f``."""
    for addr in _starts(f, isa):
        region = rule(f.code, f.start, addr, f)
        if not isinstance(region, str):
            yield addr, region


# -- (a) no branch into the region -----------------------------------------------------------


def _capstone() -> capstone.Cs:
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    md.detail = True
    return md


_FLOW = (capstone.CS_GRP_JUMP, capstone.CS_GRP_CALL, capstone.CS_GRP_BRANCH_RELATIVE)


def edges(f: Function) -> list[z3.BoolRef]:
    """Where control flow can enter in ``f``, as conditions on the Z3 variable ``target``,
    decoded by capstone: direct targets, return sites of calls, any address at all for an
    indirect jump, and for an indirect call any function entry (the function's own start,
    or an address outside it: a function pointer names a function, as IBT's ``ENDBR``
    rule requires)."""
    t = z3.BitVec("target", 64)
    end = f.start + len(f.code)
    out: list[z3.BoolRef] = []
    for ins in _capstone().disasm(f.code, f.start):
        if not any(ins.group(g) for g in _FLOW):
            continue
        call = ins.group(capstone.CS_GRP_CALL)
        if call:
            out.append(t == ins.address + ins.size)
        op = ins.operands[0] if ins.operands else None
        if op is not None and op.type == csx86.X86_OP_IMM:
            out.append(t == op.imm & bits.mask(64))
        elif call:
            out.append(z3.Or(t == f.start, z3.ULT(t, f.start), z3.UGE(t, end)))
        else:
            entries = _table(f, op)
            out.append(z3.BoolVal(True) if entries is None
                       else z3.Or([t == e for e in entries] or [z3.BoolVal(False)]))
    return out


def _table(f: Function, op: csx86.X86Op | None) -> list[int] | None:
    """The entries of a ``jmp [index*8 + table]`` jump table that point into ``f``, read
    from the image while they point at code; ``None`` for any other indirect jump or a
    table not known (its target is then free)."""
    if op is None or op.type != csx86.X86_OP_MEM or op.mem.base != 0 or op.mem.index == 0 \
            or op.mem.scale != 8 or op.mem.segment != 0:
        return None
    table, end = op.mem.disp & bits.mask(64), f.start + len(f.code)
    out: list[int] = []
    for i in range(4096):
        raw = f.read(table + 8 * i, 8)
        entry = None if raw is None else int.from_bytes(raw, "little")
        if entry is None or not f.executable(entry):
            return out if i else None
        if f.start <= entry < end:
            out.append(entry)
    return None


_RV_BRANCHES = frozenset({"beq", "bne", "blt", "bge", "bltu", "bgeu", "beqz", "bnez", "blez",
                          "bgez", "bltz", "bgtz", "bgt", "ble", "bgtu", "bleu", "c.beqz",
                          "c.bnez", "j", "c.j"})
"""riscv64 mnemonics (capstone's, aliases included) whose last operand is a PC-relative
target and that do not link."""


def rv_edges(f: Function) -> list[z3.BoolRef]:
    """Where control flow can enter in a riscv64 ``f``, decoded by capstone apart from the
    rule: branch and jump targets, the targets and return sites of ``jal``, the return
    sites of ``jalr``, any function entry for the target of ``jalr`` (a function pointer),
    and any address at all for ``jr`` through a register other than ``ra``."""
    md = capstone.Cs(capstone.CS_ARCH_RISCV, capstone.CS_MODE_RISCV64 | capstone.CS_MODE_RISCVC)
    md.detail = True
    t = z3.BitVec("target", 64)
    end = f.start + len(f.code)
    out: list[z3.BoolRef] = []
    for ins in md.disasm(f.code, f.start):
        imm = [o.imm for o in ins.operands if o.type == csrv.RISCV_OP_IMM]
        regs = [o.reg for o in ins.operands if o.type == csrv.RISCV_OP_REG]
        name = ins.mnemonic
        if name in _RV_BRANCHES and imm:
            out.append(t == (ins.address + imm[-1]) & bits.mask(64))
        elif name in ("jal", "c.jal") and imm:
            out += [t == ins.address + ins.size, t == (ins.address + imm[-1]) & bits.mask(64)]
        elif name in ("jalr", "c.jalr"):
            out += [t == ins.address + ins.size,
                    z3.Or(t == f.start, z3.ULT(t, f.start), z3.UGE(t, end))]
        elif name in ("jr", "c.jr") and regs != [csrv.RISCV_REG_RA]:
            out.append(z3.BoolVal(True))
    return out


def _into_region(f: Function, rule: PlanRule, isa: str = "x86_64"
                 ) -> tuple[z3.BoolRef, dict[int, int]] | None:
    regions = {addr: r.end for addr, r in accepted(f, rule, isa)}
    if not regions:
        return None
    t = z3.BitVec("target", 64)
    enters = z3.Or((edges(f) if isa == "x86_64" else rv_edges(f)) or [z3.BoolVal(False)])
    inside = z3.Or([z3.And(z3.UGT(t, a), z3.ULT(t, end)) for a, end in regions.items()])
    return z3.Not(z3.And(enters, inside)), regions


def _no_branch_into_region(functions: list[Function], rule: PlanRule,
                           isa: str = "x86_64") -> Result:
    checked = 0
    for f in functions:
        got = _into_region(f, rule, isa)
        if got is None:
            continue
        claim, regions = got
        r = prove(claim)
        if not r.proved:
            cex = r.counterexample or {}
            t = int(cex.get("target", "0"), 16)
            hit = [hex(a) for a, end in regions.items() if a < t < end]
            return Result(False, 0.0, {"function": f.name, "target": hex(t),
                                       "regions": ",".join(hit)},
                          "a branch of the function lands inside an accepted region")
        checked += len(regions)
    return Result(True, 0.0, None, f"{checked} accepted regions in {len(functions)} functions")


# -- (b) and (c): the detour ---------------------------------------------------------------


def _sample(functions: list[Function], rule: PlanRule) -> list[tuple[int, OptRegion]]:
    every = [(a, r) for f in functions for a, r in accepted(f, rule)]
    rip = [(a, r) for a, r in every if any("disp_offset" in d.fields for d in r.insns)]
    rest = [x for x in every if x not in rip]
    random.Random(11).shuffle(rest)
    return rip + rest[:max(0, SAMPLE - len(rip))]


def _plans(functions: list[Function], plan: PlanRule, build: BuildRule
           ) -> Iterator[tuple[int, OptRegion, int, OptPlan]]:
    for addr, region in _sample(functions, plan):
        for delta in DELTAS:
            built = build(region, addr, (addr + delta) & bits.mask(64))
            if not isinstance(built, str):
                yield addr, region, delta, built


def _layout_error(region: OptRegion, addr: int, p: OptPlan) -> str | None:
    """Whether the detour holds the region in order, back to back, changed only in a
    RIP-relative displacement."""
    at = p.entry
    if not len(p.copies) == len(p.starts) == len(region.insns):
        return f"{len(p.copies)} copies of a region of {len(region.insns)} instructions"
    for i, d in enumerate(region.insns):
        if p.copies[i] != at or p.starts[i] != d.address - addr:
            return f"instruction {i} placed at {p.copies[i]}, expected {at}"
        copy = p.detour[at:at + d.length]
        keep = [j for j in range(d.length) if not _in_disp(d, j)]
        if len(copy) != d.length or any(copy[j] != d.raw[j] for j in keep):
            return f"instruction {i} ({d.raw.hex()}) copied as {copy.hex()}"
        at += d.length
    if p.back != at or p.region != region.end - addr:
        return f"jump back at {p.back}, expected {at}"
    return None


def _in_disp(d: Decoded, j: int) -> bool:
    off = d.fields.get("disp_offset")
    return off is not None and off <= j < off + 4


def _rip_claims(region: OptRegion, delta: int, p: OptPlan, a: z3.BitVecRef,
                s: State) -> list[z3.BoolRef]:
    out = []
    for i, d in enumerate(region.insns):
        off = d.fields.get("disp_offset")
        if off is None:
            continue
        new = int.from_bytes(p.detour[p.copies[i] + off:p.copies[i] + off + 4], "little")
        orig = X86Insn(0, 0, d.length, mem=MemOperand("rip", None, 1, d.fields["mdisp"]))
        moved = X86Insn(0, 0, d.length, mem=MemOperand("rip", None, 1, new))
        here = s.evolve(a + p.starts[i])
        there = s.evolve(a + delta + p.copies[i])
        out.append(effective_address(here, orig) == effective_address(there, moved))
    return out


def _same_state(functions: list[Function], plan: PlanRule, build: BuildRule) -> Result:
    s = initial_state(model("x86_64").REGS)
    a = z3.BitVec("probe", 64)
    claims, count = [], 0
    for addr, region, delta, p in _plans(functions, plan, build):
        why = _layout_error(region, addr, p)
        if why is not None:
            return Result(False, 0.0, {"probe": hex(addr), "delta": hex(delta)}, why)
        for claim in _rip_claims(region, delta, p, a, s):
            claims.append((addr, delta, claim))
        count += 1
    return _prove_each(claims, f"{count} (region, detour) pairs, every probe address")


def _prove_each(claims: list[tuple[int, int, z3.BoolRef]], detail: str) -> Result:
    """Prove the conjunction; on failure name the first failing (probe, distance)."""
    r = prove(z3.And([c for _, _, c in claims] or [True]), detail)
    if r.proved:
        return r
    for addr, delta, claim in claims:
        one = prove(claim)
        if not one.proved:
            cex = {"sample probe": hex(addr), "delta": hex(delta & bits.mask(64)),
                   **(one.counterexample or {})}
            return Result(False, 0.0, cex, detail)
    return r


def _lands(s: State, jump: bytes, target: z3.BitVecRef) -> z3.BoolRef:
    """``jump`` (at ``s.pc``) is ``jmp rel32`` and, on the model, lands on ``target``
    with nothing else changed."""
    if len(jump) != 5 or jump[0] != 0xE9:
        return z3.BoolVal(False)
    cls = model("x86_64").CLASSES["jmp_rel32"]
    after = cls.step(s, X86Insn(0xE9, 0, 5, int.from_bytes(jump[1:], "little")))
    return z3.And(cls.encoding(0xE9, 0), same_state(s.evolve(target), after))


def _jump_back(functions: list[Function], plan: PlanRule, build: BuildRule) -> Result:
    s = initial_state(model("x86_64").REGS)
    a = z3.BitVec("probe", 64)
    claims, count = [], 0
    for addr, _region, delta, p in _plans(functions, plan, build):
        entry = _lands(s.evolve(a), p.jump, a + delta)
        back = _lands(s.evolve(a + delta + p.back), p.detour[p.back:p.back + 5], a + p.region)
        claims.append((addr, delta, z3.And(entry, back)))
        count += 1
    return _prove_each(claims, f"{count} (region, detour) pairs, every probe address")


def optprobe_obligations(isa: str, plan: PlanRule | None = None,
                         build: BuildRule | None = None,
                         functions: list[Function] | None = None) -> list[Obligation]:
    """The optimized-probe obligations of ``isa`` (none where the ISA optimizes nothing);
    ``plan``/``build`` replace the ISA's rules and ``functions`` the corpus."""
    if isa == "riscv64":
        return _riscv_obligations(plan, build, functions)
    if isa != "x86_64":
        return []
    arch = get_arch(isa)
    plan_rule: PlanRule = plan or arch.plan_optimized_region
    build_rule: BuildRule = build or arch.build_detour
    cache: list[list[Function]] = []

    def funcs() -> list[Function]:
        if not cache:
            cache.append(functions if functions is not None else corpus_functions())
        return cache[0]

    return [
        Obligation(isa, "optprobe", "no-branch-into-region",
                   timed(lambda: _no_branch_into_region(funcs(), plan_rule))),
        Obligation(isa, "optprobe", "detour-same-state",
                   timed(lambda: _same_state(funcs(), plan_rule, build_rule))),
        Obligation(isa, "optprobe", "jump-back-lands",
                   timed(lambda: _jump_back(funcs(), plan_rule, build_rule))),
    ]



# -- riscv64: the dead register and the auipc+jalr pair ----------------------------------------


def _rv_successors(i: int, f: Function, insns: tuple[Decoded, ...],
                   effects: tuple[rv_opt.Effect, ...], index: dict[int, int]
                   ) -> tuple[list[int], int]:
    """Where control goes after instruction ``i``: the instructions of ``f`` it can reach
    next, and the registers the calling convention makes live if it leaves ``f`` there."""
    e, end = effects[i], f.start + len(f.code)
    nxt = ([i + 1], 0) if i + 1 < len(insns) else ([], rv_opt.ALL)

    def to(addr: int) -> tuple[list[int], int]:
        if not f.start <= addr < end:
            return [], rv_opt.TAIL
        j = index.get(addr)
        return ([j], 0) if j is not None else ([], rv_opt.ALL)

    if e.kind in ("next", "call"):
        return nxt
    if e.kind in ("branch", "jump"):
        assert e.target is not None
        there = to(e.target)
        if e.kind == "jump":
            return there
        return nxt[0] + there[0], nxt[1] | there[1]
    return [], rv_opt.EXIT if e.kind == "ret" else rv_opt.ALL


def _rv_dead_claim(f: Function, addr: int, region: OptRegion) -> Result:
    """Datalog over ``f``: from the probe, following control flow and stopping where the
    scratch register is written, no instruction reads it, no exit leaves it live, and no
    region instruction writes it."""
    r = region.scratch
    assert r is not None
    insns = rv_opt.flow(f.code, f.start).insns
    effects = tuple(rv_opt.effect(d.raw, d.address) for d in insns)
    index = {d.address: i for i, d in enumerate(insns)}
    fp = z3.Fixedpoint()
    fp.set(engine="datalog")
    node = z3.BitVecSort(16)
    reach, bad = z3.Function("reach", node, z3.BoolSort()), z3.Function("bad", z3.BoolSort())
    fp.register_relation(reach, bad)
    fp.fact(reach(z3.BitVecVal(index[addr], 16)))
    inside = {index[d.address] for d in region.insns}
    for i, e in enumerate(effects):
        here = reach(z3.BitVecVal(i, 16))
        succ, leaving = _rv_successors(i, f, insns, effects, index)
        if e.uses >> r & 1 or (i in inside and e.defs >> r & 1):
            fp.rule(bad(), here)
        if e.defs >> r & 1:
            continue
        if leaving >> r & 1:
            fp.rule(bad(), here)
        for j in succ:
            fp.rule(reach(z3.BitVecVal(j, 16)), here)
    if fp.query(bad()) == z3.unsat:
        return Result(True, 0.0, None, "")
    return Result(False, 0.0, {"function": f.name, "probe": hex(addr), "scratch": f"x{r}"},
                  "a path from the probe reads the scratch register before writing it")


def _rv_scratch_dead(functions: list[Function], plan: PlanRule) -> Result:
    count = 0
    for f in functions:
        for addr, region in accepted(f, plan, "riscv64"):
            r = _rv_dead_claim(f, addr, region)
            if not r.proved:
                return r
            count += 1
    return Result(True, 0.0, None, f"{count} accepted regions, scratch register dead")


def _rv_lands(s: State, pair: bytes, target: z3.BitVecRef, reg: int) -> z3.BoolRef:
    """``pair`` (at ``s.pc``) is ``auipc reg; jalr x0, (reg)`` and, on the model, lands on
    ``target`` changing no register but ``reg``."""
    cls = model("riscv64").CLASSES
    w1, w2 = int.from_bytes(pair[:4], "little"), int.from_bytes(pair[4:8], "little")
    mid = cls["auipc"].step(s, w1)
    after = cls["jalr"].step(mid, w2)
    name = f"x{reg}"
    expect = s.evolve(target, {name: after.regs[name]})
    return z3.And(cls["auipc"].encoding(w1), cls["jalr"].encoding(w2),
                  (w2 >> 7) & 31 == 0, (w2 >> 15) & 31 == reg, (w1 >> 7) & 31 == reg,
                  same_state(expect, after))


def _rv_jumps_land(functions: list[Function], plan: PlanRule, build: BuildRule) -> Result:
    s = initial_state(model("riscv64").REGS)
    a = z3.BitVec("probe", 64)
    even = z3.Extract(0, 0, a) == 0
    claims, count = [], 0
    for addr, region in _sample_rv(functions, plan):
        for delta in DELTAS:
            p = build(region, addr, (addr + delta) & bits.mask(64))
            if isinstance(p, str):
                continue
            reg = region.scratch
            assert reg is not None
            entry = _rv_lands(s.evolve(a), p.jump, a + delta, reg)
            back = _rv_lands(s.evolve(a + delta + p.back), p.detour[p.back:p.back + 8],
                             a + p.region, reg)
            claims.append((addr, delta, z3.Implies(even, z3.And(entry, back))))
            count += 1
    return _prove_each(claims, f"{count} (region, detour) pairs, every even probe address")


def _rv_layout(functions: list[Function], plan: PlanRule, build: BuildRule) -> Result:
    """The detour holds the region's instructions in order, back to back, byte for byte:
    a stepped RISC-V instruction never reads the PC (the ``decode-pc`` obligations), so
    each leaves the state the original leaves, whatever its address."""
    count = 0
    for addr, region in _sample_rv(functions, plan):
        for delta in DELTAS:
            p = build(region, addr, (addr + delta) & bits.mask(64))
            if isinstance(p, str):
                continue
            why = _layout_error(region, addr, p)
            if why is not None:
                return Result(False, 0.0, {"probe": hex(addr), "delta": hex(delta)}, why)
            count += 1
    return Result(True, 0.0, None, f"{count} (region, detour) pairs")


def _sample_rv(functions: list[Function], plan: PlanRule) -> list[tuple[int, OptRegion]]:
    every = [(a, r) for f in functions for a, r in accepted(f, plan, "riscv64")]
    random.Random(12).shuffle(every)
    return every[:SAMPLE]


def _riscv_obligations(plan: PlanRule | None, build: BuildRule | None,
                       functions: list[Function] | None) -> list[Obligation]:
    arch = get_arch("riscv64")
    plan_rule: PlanRule = plan or arch.plan_optimized_region
    build_rule: BuildRule = build or arch.build_detour
    cache: list[list[Function]] = []

    def funcs() -> list[Function]:
        if not cache:
            cache.append(functions if functions is not None else corpus_functions("riscv64"))
        return cache[0]

    return [
        Obligation("riscv64", "optprobe", "no-branch-into-region",
                   timed(lambda: _no_branch_into_region(funcs(), plan_rule, "riscv64"))),
        Obligation("riscv64", "optprobe", "scratch-dead",
                   timed(lambda: _rv_scratch_dead(funcs(), plan_rule))),
        Obligation("riscv64", "optprobe", "detour-same-state",
                   timed(lambda: _rv_layout(funcs(), plan_rule, build_rule))),
        Obligation("riscv64", "optprobe", "jumps-land",
                   timed(lambda: _rv_jumps_land(funcs(), plan_rule, build_rule))),
    ]
