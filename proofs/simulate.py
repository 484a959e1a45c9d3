"""Simulation obligations: kprobe_ref's own rule, run on Z3 terms, equals the model.

For every class the table simulates, ``RULES[klass]`` runs on a :class:`SymState` whose
registers, memory, extras and instruction address are Z3 variables, with a ``Decoded``
whose immediates are Z3 terms of the symbolic instruction word.  The rules branch in Python
on a few small fields (register numbers, condition codes, the tested bit of TBZ, ``sf``):
those fields are enumerated concretely, every value of them, and the claim has one conjunct
per value, in which those word bits (and the bits the row fixes) are constants:

    row(word)  =>  rule(word, state) == model(word, state)

for every word and every state: PC, every register, memory and the extra registers.

x86_64 instructions are not one word: the claim ranges over the opcode and ModRM bytes the
rows allow, the instruction length, the raw displacement or immediate, REX.B, and (memory
forms) every base, index and scale with a symbolic disp32.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from importlib import import_module
from typing import Any, cast

import z3

from kprobe_ref import bits
from kprobe_ref.arch import get_arch
from kprobe_ref.arch.base import Decoded, Verdict
from kprobe_ref.bits import BV
from kprobe_ref.models import model
from kprobe_ref.models.state import State
from kprobe_ref.models.x86_64 import GPRS, MemOperand, X86Insn
from kprobe_ref.proofs.core import Obligation, Result, prove, timed
from kprobe_ref.proofs.symstate import SymState, initial_state, merge, same_state
from kprobe_ref.proofs.tables import (
    decode_module,
    lift_fields,
    row_predicate,
    rows_by_class,
    with_key,
    x86_row_predicate,
)

__all__ = ["ENUMERATED_MAX_BITS", "simulate_obligations", "specialised"]

Rule = Callable[[Any, Decoded], None]

ENUMERATED_MAX_BITS = 6
"""A decoded field read from at most this many word bits is enumerated concretely; wider
fields (immediates) stay symbolic."""


def rules_of(isa: str) -> Mapping[str, Rule]:
    """The implementation's simulation rules of ``isa``."""
    return cast(Mapping[str, Rule], import_module(f"kprobe_ref.arch.{isa}.simulate").RULES)


def _decoded(klass: str, fields: Mapping[str, BV]) -> Decoded:
    return Decoded(0, b"", Verdict.SIMULATE, klass, "", "", cast(Mapping[str, int], fields))


def _run(rule: Rule, start: State, zero: str | None, d: Decoded) -> State:
    s = SymState(start, zero)
    rule(s, d)
    return s.final()


# -- fixed-width ISAs --------------------------------------------------------------------------


def _fixed_claim(isa: str, rows: Sequence[Any], rule: Rule, word: BV,
                 start: State) -> z3.BoolRef:
    """``row(word) => rule == model`` for one class, over every row of the class, one
    conjunct per value of the enumerated bits.  In each conjunct the word's bits the row
    fixes and the enumerated bits are constants; the model is stepped once on the row's
    word and specialised to each case by substitution."""
    step = model(isa).CLASSES[rows[0].klass].step
    zero = get_arch(isa).regs_class.ZERO
    claims = []
    for row in rows:
        lifted = lift_fields(isa, row)
        small = [] if isinstance(word, int) else sorted(
            {k for bs in lifted.depends.values() if len(bs) <= ENUMERATED_MAX_BITS for k in bs})
        mask, match = row.mask_match
        fixed = [k for k in range(lifted.width) if (mask >> k) & 1]
        w_row = _with_bits(word, fixed, _gather(match, fixed), lifted.width)
        expected = step(start, w_row)
        symbolic = lifted.fields(w_row)
        for a in range(1 << len(small)):
            w_a = _with_bits(w_row, small, a, lifted.width)
            guard = row_predicate(row, w_a)
            try:
                fields = _fields(lifted, symbolic, small, a)
                got = _run(rule, start, zero, _decoded(row.klass, fields))
            except (KeyError, IndexError, ValueError):
                claims.append(z3.simplify(z3.Not(guard)))
                continue
            claims.append(z3.simplify(z3.Implies(guard, same_state(
                _specialise(expected, start, word, w_a), got))))
    return z3.And(*claims)


def _gather(value: int, positions: Sequence[int]) -> int:
    return sum(((value >> k) & 1) << i for i, k in enumerate(positions))


def _specialise(st: State, start: State, word: BV, w_a: BV) -> State:
    """``st`` with ``word`` replaced by ``w_a`` and simplified (values still those of
    ``start`` are kept as they are)."""
    if isinstance(word, int):
        return st

    def sub(x: Any, old: Any) -> Any:
        if isinstance(x, int) or x is old or (isinstance(old, z3.AstRef) and x.eq(old)):
            return x
        return z3.simplify(z3.substitute(x, (word, w_a)))

    return State(sub(st.pc, None), {r: sub(v, start.regs[r]) for r, v in st.regs.items()},
                 sub(st.mem, start.mem),
                 {e: sub(v, start.extras[e]) for e, v in st.extras.items()})


def _fields(lifted: Any, symbolic: Mapping[str, BV], small: Sequence[int],
            a: int) -> dict[str, BV]:
    """The rule's fields for case ``a``: those read only from enumerated bits as plain
    integers, the others the ``symbolic`` fields of the word."""
    concrete = lifted.fields(with_key(lifted.base, small, a))
    return {n: concrete[n] if set(lifted.depends[n]) <= set(small) else symbolic[n]
            for n in concrete}


def _with_bits(word: BV, positions: Sequence[int], key: int, width: int) -> BV:
    """``word`` with the bits at ``positions`` replaced by those of ``key`` (first position
    lowest)."""
    if isinstance(word, int):
        return with_key(word, positions, key)
    value = {k: (key >> i) & 1 for i, k in enumerate(positions)}
    parts = [z3.BitVecVal(value[k], 1) if k in value else z3.Extract(k, k, word)
             for k in reversed(range(width))]
    return z3.simplify(z3.Concat(*parts))


def _fixed_check(isa: str, rows: Sequence[Any], rule: Rule, word: BV | None = None,
                 address: BV | None = None) -> Result:
    m = model(isa)
    width = m.CLASSES[rows[0].klass].width
    start = initial_state(m.REGS, m.EXTRAS)
    if address is not None:
        start = State(address, start.regs, start.mem, start.extras)
    w = z3.BitVec("word", width) if word is None else word
    small = ", ".join(sorted({n for r in rows for n, b in lift_fields(isa, r).depends.items()
                              if 0 < len(b) <= ENUMERATED_MAX_BITS}))
    detail = "specialised to the word" if word is not None else f"enumerated: {small or 'none'}"
    return prove(_fixed_claim(isa, rows, rule, w, start), detail)


# -- x86_64 -----------------------------------------------------------------------------------

_REL = {"jcc_rel8": 8, "jmp_rel8": 8, "loop": 8, "loope": 8, "loopne": 8, "jrcxz": 8,
        "jcc_rel32": 32, "jmp_rel32": 32, "call_rel32": 32}
BASE_RIP, BASE_NONE = 16, 17


def _x86_vars() -> dict[str, z3.BitVecRef]:
    return {"opcode": z3.BitVec("opcode", 8), "modrm": z3.BitVec("modrm", 8),
            "len": z3.BitVec("len", 64), "imm": z3.BitVec("imm", 32),
            "mdisp": z3.BitVec("disp32", 32), "rex_b": z3.BitVec("rex_b", 1)}


def _x86_fields(klass: str, v: Mapping[str, z3.BitVecRef]) -> tuple[dict[str, BV], BV]:
    """The implementation's fields for a symbolic instruction (cc and reg filled in per
    case), and the raw displacement/immediate as the model reads it."""
    f: dict[str, BV] = {"len": v["len"]}
    imm: BV = 0
    if klass in _REL:
        imm = bits.zext(v["imm"], _REL[klass])
        f["disp"], f["dsize"] = bits.zext(imm, _REL[klass]), _REL[klass]
    elif klass == "ret_imm16":
        imm = bits.zext(v["imm"], 16)
        f["imm"] = imm
    return f, imm


def _x86_simple(klass: str, rule: Rule, start: State, v: Mapping[str, z3.BitVecRef]) -> State:
    """Rule result merged over the condition code (Jcc) or REX.B:rm (register forms)."""
    fields, _ = _x86_fields(klass, v)
    if klass.startswith("jcc"):
        key, kw, name = bits.extract(v["opcode"], 3, 0), 4, "cc"
    elif klass.endswith("_reg"):
        key = z3.Concat(v["rex_b"], z3.Extract(2, 0, v["modrm"]))
        kw, name = 4, "reg"
    else:
        return _run(rule, start, None, _decoded(klass, fields))
    cases = {a: _run(rule, start, None, _decoded(klass, {**fields, name: a}))
             for a in range(16)}
    return merge(cases, key, kw, cases[0])


def _x86_insn(klass: str, v: Mapping[str, z3.BitVecRef], mem: MemOperand | None) -> X86Insn:
    _, imm = _x86_fields(klass, v)
    rex_b = v["rex_b"] if klass.endswith("_reg") else 0
    return X86Insn(v["opcode"], v["modrm"], v["len"], imm, rex_b, mem)


def _operands() -> list[tuple[int, int, int]]:
    bases = [*range(16), BASE_RIP, BASE_NONE]
    indexes = [*(i for i in range(16) if i != 4), BASE_NONE]
    return [(b, i, s) for b in bases for i in indexes for s in (1, 2, 4, 8)]


def _name(n: int) -> str | None:
    return "rip" if n == BASE_RIP else None if n == BASE_NONE else GPRS[n]


def _x86_mem_claim(klass: str, rule: Rule, start: State,
                   v: Mapping[str, z3.BitVecRef]) -> z3.BoolRef:
    cls = model("x86_64").CLASSES[klass]
    claims = []
    for base, index, scale in _operands():
        if index == BASE_NONE and scale != 1:
            continue
        fields = {"len": v["len"], "base": base, "index": index, "scale": scale,
                  "mdisp": bits.zext(v["mdisp"], 32)}
        got = _run(rule, start, None, _decoded(klass, fields))
        mem = MemOperand(_name(base), _name(index), scale, v["mdisp"])
        claims.append(same_state(cls.step(start, _x86_insn(klass, v, mem)), got))
    return z3.And(*claims)


def _x86_check(rows: Sequence[Any], rule: Rule) -> Result:
    klass = rows[0].klass
    cls = model("x86_64").CLASSES[klass]
    start = initial_state(model("x86_64").REGS)
    v = _x86_vars()
    in_rows = z3.Or(*(x86_row_predicate(r, cls.opmap, v["opcode"], v["modrm"]) for r in rows))
    if klass.endswith("_mem"):
        return prove(z3.Implies(in_rows, _x86_mem_claim(klass, rule, start, v)),
                     "enumerated: base, index, scale")
    got = _x86_simple(klass, rule, start, v)
    expected = cls.step(start, _x86_insn(klass, v, None))
    detail = "enumerated: cc" if klass.startswith("jcc") else (
        "enumerated: REX.B:rm" if klass.endswith("_reg") else "enumerated: none")
    return prove(z3.Implies(in_rows, same_state(expected, got)), detail)


# -- obligations -------------------------------------------------------------------------------


def simulate_obligations(isa: str, rows: Sequence[Any] | None = None,
                         rules: Mapping[str, Rule] | None = None) -> list[Obligation]:
    """One ``simulate`` obligation per simulated class of ``isa``."""
    table = list(decode_module(isa).ROWS if rows is None else rows)
    rule_map = rules_of(isa) if rules is None else rules
    obs = []
    for klass, krows in rows_by_class(table).items():
        if krows[0].verdict is not Verdict.SIMULATE:
            continue
        if klass not in model(isa).CLASSES:
            obs.append(Obligation(isa, "simulate", klass, lambda: Result(
                False, 0.0, None, "no model of this class")))
            continue
        rule = rule_map[klass]
        check = (lambda kr=krows, r=rule: _x86_check(kr, r)) if isa == "x86_64" else (
            lambda kr=krows, r=rule: _fixed_check(isa, kr, r))
        obs.append(Obligation(isa, "simulate", klass, timed(check)))
    return obs


def specialised(isa: str, klass: str, word: int, address: int) -> Result:
    """The ``simulate`` obligation of a fixed-width ISA for one concrete word at one
    concrete address, for every register state and memory."""
    rows = [r for r in decode_module(isa).ROWS if r.klass == klass
            and row_predicate(r, word)]
    return timed(lambda: _fixed_check(isa, rows, rules_of(isa)[klass], word, address))()


def x86_specialised(d: Decoded) -> Result:
    """The ``simulate`` obligation of x86_64 for one decoded instruction: its fields as
    decoded, every register state and memory."""
    from kprobe_ref.arch.x86_64.encoding import parse

    insn = parse(d.raw, d.address)
    assert insn is not None
    f = d.fields
    start = initial_state(model("x86_64").REGS)
    start = State(d.address, start.regs, start.mem, start.extras)
    mem = None
    if "base" in f and d.klass.endswith("_mem"):
        mem = MemOperand(_name(f["base"]), _name(f["index"]), f["scale"], f["mdisp"])
    reg = f.get("reg", 0)
    imm = f.get("disp", f.get("imm", 0))
    modrm = insn.modrm if insn.modrm is not None else 0
    if d.klass.endswith("_reg"):
        modrm = (modrm & 0xF8) | (reg & 7)
    model_insn = X86Insn(insn.opcode, modrm, f["len"], imm, reg >> 3, mem)
    expected = model("x86_64").CLASSES[d.klass].step(start, model_insn)
    got = _run(rules_of("x86_64")[d.klass], start, None, d)
    return timed(lambda: prove(same_state(expected, got)))()
