"""Boosted slot obligations (``docs/boost.md``).

A boosted slot variant is the probed instruction, relocated for the variant's address
exactly as the two-trap slot relocates it, followed by a jump back to the instruction after
the probe.  Three claims per ISA, the jump checked against the ISA's model (written from the
manual, independently of the encoders in ``arch/<isa>/slot.py``):

- ``boost``/``jump-lands``: for every jump address ``at`` and target ``next`` (aligned as
  instructions are) that the ISA's ``jump_reaches`` accepts, the word ``jump_word(at, next)``
  is the model's unconditional branch (x86: ``jmp rel32``) and, executed at ``at`` from any
  state, leaves every register, every extra register and memory unchanged and the PC at
  ``next``.  On x86_64 the same is proved for the absolute form a process slot uses
  (``jmp [rip+0]`` with the 8-byte target after it, ``jump-lands-absolute``).
- ``boost``/``jump-reach``: ``jump_reaches`` accepts every distance the encoding can
  express (it is not stricter than the ISA, so no slot within reach falls back to two traps).
- ``boost``/``same-state``: for a sample of stepped instructions and slot addresses (in and
  out of reach, kernel and process), the boosted variant is ``None`` exactly when boosting
  is refused, the jump cannot reach or the slot borrows a scratch register; otherwise it is
  the two-trap variant's instruction bytes for that address followed by a jump that, run
  concretely on the model, lands on ``probe address + resume_delta`` and changes nothing
  else.  The two-trap path ends with the end-of-step trap, whose handler sets the PC to
  ``probe address + resume_delta`` and restores the scratch register (there is none), so
  both paths leave the same state: the instruction's effect, then the same PC.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from types import ModuleType

import z3

from kprobe_ref import bits
from kprobe_ref.arch import get_arch
from kprobe_ref.arch.aarch64 import slot as a64_slot
from kprobe_ref.arch.base import Decoded, Verdict
from kprobe_ref.arch.loongarch64 import slot as la_slot
from kprobe_ref.arch.riscv64 import slot as rv_slot
from kprobe_ref.arch.x86_64 import slot as x86_slot
from kprobe_ref.arch.x86_64.encoding import parse
from kprobe_ref.bits import BV, Cond
from kprobe_ref.errors import OutOfReach
from kprobe_ref.models import model
from kprobe_ref.models.state import State, store
from kprobe_ref.models.x86_64 import MemOperand, X86Insn
from kprobe_ref.proofs.core import Obligation, Result, prove, timed
from kprobe_ref.proofs.symstate import initial_state, same_state

__all__ = ["SLOT_MODULES", "boost_obligations"]

Reaches = Callable[[BV, BV], Cond]

SLOT_MODULES: dict[str, ModuleType] = {"x86_64": x86_slot, "aarch64": a64_slot, "riscv64": rv_slot,
                                 "loongarch64": la_slot}
_BRANCH = {"aarch64": "b", "riscv64": "jal", "loongarch64": "b"}
"""The model class of each fixed-length ISA's jump back."""
_RANGE = {"x86_64": (31, 1), "aarch64": (27, 4), "riscv64": (20, 2), "loongarch64": (27, 4)}
"""Architectural reach of the jump: distances in [-2**n, 2**n), multiples of ``align``
(x86: measured from the end of the 5-byte jump)."""


def _aligned(x: z3.BitVecRef, align: int) -> Cond:
    return bits.eq(bits.and_(x, align - 1), 0) if align > 1 else True


def _state(isa: str) -> State:
    m = model(isa)
    return initial_state(m.REGS, m.EXTRAS)


def _step_word(isa: str, s: State, word: BV) -> tuple[Cond, State]:
    """The model's branch class for ``word``: its encoding predicate and next state."""
    if isa == "x86_64":
        insn = X86Insn(0xE9, 0, 5, word)
        cls = model(isa).CLASSES["jmp_rel32"]
        return cls.encoding(0xE9, 0), cls.step(s, insn)
    cls = model(isa).CLASSES[_BRANCH[isa]]
    return cls.encoding(word), cls.step(s, word)


def _unchanged_but_pc(before: State, after: State, target: BV) -> z3.BoolRef:
    return same_state(before.evolve(target), after)


def _jump_lands(isa: str, reaches: Reaches) -> Result:
    s = _state(isa)
    target = z3.BitVec("next", 64)
    align = get_arch(isa).insn_align
    word = (x86_slot.jump_rel32_field(s.pc, target) if isa == "x86_64"
            else SLOT_MODULES[isa].jump_word(s.pc, target))
    enc, after = _step_word(isa, s, word)
    hyp = z3.And(_aligned(s.pc, align), _aligned(target, align), reaches(s.pc, target))
    claim = z3.Implies(hyp, z3.And(enc, _unchanged_but_pc(s, after, target)))
    return prove(claim, "every (jump address, target) pair the reach rule accepts")


def _jump_reach(isa: str, reaches: Reaches) -> Result:
    at, off = z3.BitVec("at", 64), z3.BitVec("distance", 64)
    n, align = _RANGE[isa]
    start = bits.add(at, 5) if isa == "x86_64" else at
    in_range = z3.And(off >= -(1 << n), off < (1 << n), _aligned(off, align))
    claim = z3.Implies(z3.And(in_range, _aligned(at, get_arch(isa).insn_align)),
                       reaches(at, bits.add(start, off)))
    return prove(claim, f"every distance in [-2**{n}, 2**{n}) that is a multiple of {align}")


def _jump_lands_absolute() -> Result:
    s = _state("x86_64")
    target = z3.BitVec("next", 64)
    rng = random.Random(7)
    for t in [rng.getrandbits(64) for _ in range(64)] + [0, (1 << 64) - 1]:
        code = x86_slot.jump_abs(t)
        if code != b"\xff\x25" + bytes(4) + t.to_bytes(8, "little"):
            return Result(False, 0.0, {"target": hex(t)}, f"jump_abs gave {code.hex()}")
    mem = store(s.mem, bits.add(s.pc, 6), 8, target)
    start = s.evolve(s.pc, mem=mem)
    cls = model("x86_64").CLASSES["jmp_ind_mem"]
    insn = X86Insn(0xFF, 0x25, 6, mem=MemOperand("rip", None, 1, 0))
    after = cls.step(start, insn)
    claim = z3.And(cls.encoding(0xFF, 0x25), _unchanged_but_pc(start, after, target))
    return prove(claim, "jmp [rip+0] with the target stored after it, any address")


# -- the variant against the two-trap slot --------------------------------------------------


def _samples(isa: str, n: int) -> list[Decoded]:
    arch, rng = get_arch(isa), random.Random(f"boost-{isa}")
    heads = [bytes.fromhex(h) for h in ("488b05", "8b0d", "0fa2", "2e90", "f6c8", "f0ff00")]
    out: list[Decoded] = []
    while len(out) < n:
        if isa == "x86_64" and rng.random() < 0.3:
            code = rng.choice(heads) + rng.getrandbits(32).to_bytes(4, "little")
        else:
            code = rng.getrandbits(32).to_bytes(4, "little")
        addr = rng.getrandbits(47) & ~(arch.insn_align - 1)
        d = arch.decode(code + bytes(12), addr, False)
        if d.verdict is Verdict.STEP_OUT_OF_LINE:
            out.append(d)
    return out


def _slot_addresses(isa: str, d: Decoded, rng: random.Random) -> list[int]:
    arch = get_arch(isa)
    near = (d.address + rng.randint(-arch.boost_reach, arch.boost_reach)) % (1 << 47)
    far = d.address ^ (1 << 46)
    return [a & ~(arch.insn_align - 1) for a in (near, far)]


def _concrete(isa: str, code: bytes, at: int) -> State:
    """A concrete model state at ``at`` with ``code`` in memory there."""
    m = model(isa)
    return State(at, {r: 0x1111 * (i + 1) for i, r in enumerate(m.REGS)},
                 {(at + i) & bits.mask(64): b for i, b in enumerate(code)},
                 {e: 0 for e in m.EXTRAS})


def _run_jump(isa: str, s: State, code: bytes) -> State:
    """Run the jump at the start of ``code`` (at ``s.pc``) on the model, concretely."""
    m = model(isa)
    if isa != "x86_64":
        cls = m.CLASSES[_BRANCH[isa]]
        word = int.from_bytes(code[:4], "little")
        assert cls.encoding(word), f"{code[:4].hex()} is not the model's {cls.name}"
        after: State = cls.step(s, word)
    elif code[0] == 0xE9:
        rel = int.from_bytes(code[1:5], "little")
        after = m.CLASSES["jmp_rel32"].step(s, X86Insn(0xE9, 0, 5, rel))
    else:
        assert code[:2] == b"\xff\x25", code.hex()
        disp = int.from_bytes(code[2:6], "little")
        after = m.CLASSES["jmp_ind_mem"].step(s, X86Insn(0xFF, 0x25, 6,
                                                         mem=MemOperand("rip", None, 1, disp)))
    return after


def _refused(isa: str, d: Decoded) -> bool:
    if isa != "x86_64":
        return False
    insn = parse(d.raw, d.address)
    return insn is None or x86_slot.boost_refusal(insn) is not None


def _check_variant(isa: str, d: Decoded, slot: int, user: bool) -> str | None:
    arch = get_arch(isa)
    at = slot + arch.boost_offset
    boosted = arch.build_boosted_slot(d, at, user)
    try:
        two = arch.build_slot(d, at, user)
    except OutOfReach:
        return None if boosted is None else "a boosted variant where the slot cannot relocate"
    target = (d.address + two.resume_delta) & bits.mask(64)
    if boosted is None:
        reaches = SLOT_MODULES[isa].jump_reaches(at + two.break_offset, target)
        if two.scratch is None and not _refused(isa, d) and (reaches or (user and isa ==
                                                                         "x86_64")):
            return "no boosted variant although nothing refuses one"
        return None
    n = two.break_offset
    if two.scratch is not None or _refused(isa, d):
        return "a boosted variant where boosting is refused"
    if boosted.code[:n] != two.code[:n] or boosted.resume_delta != two.resume_delta:
        return f"variant {boosted.code.hex()} differs from the slot {two.code.hex()}"
    if arch.boost_offset + len(boosted.code) > arch.slot_size:
        return f"variant of {len(boosted.code)} bytes does not fit the slot"
    before = _concrete(isa, boosted.code[n:], at + n)
    after = _run_jump(isa, before, boosted.code[n:])
    if after.pc != target or after.regs != before.regs or after.mem != before.mem:
        return f"jump lands on {after.pc:#x}, not {target:#x}, or changes registers"
    return None


def _same_state(isa: str) -> Result:
    rng, count = random.Random(isa), 0
    for d in _samples(isa, 150):
        for slot in _slot_addresses(isa, d, rng):
            for user in (False, True):
                why = _check_variant(isa, d, slot, user)
                if why is not None:
                    return Result(False, 0.0, {"bytes": d.raw.hex(), "address": hex(d.address),
                                               "slot": hex(slot), "user": str(user)}, why)
                count += 1
    return Result(True, 0.0, None, f"checked on {count} (instruction, slot, mode) triples")


def boost_obligations(isa: str, reaches: Reaches | None = None) -> list[Obligation]:
    """The boost obligations of ``isa``; ``reaches`` replaces the ISA's reach rule (to show
    a wrong one fails)."""
    rule: Reaches = reaches or SLOT_MODULES[isa].jump_reaches
    obs = [Obligation(isa, "boost", "jump-lands", timed(lambda: _jump_lands(isa, rule))),
           Obligation(isa, "boost", "jump-reach", timed(lambda: _jump_reach(isa, rule))),
           Obligation(isa, "boost", "same-state", timed(lambda: _same_state(isa)))]
    if isa == "x86_64":
        obs.append(Obligation(isa, "boost", "jump-lands-absolute", timed(_jump_lands_absolute)))
    return obs
