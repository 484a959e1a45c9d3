"""Compilation of one instruction's P-code into Python closures.

Each P-code op becomes a small closure over a :class:`~kprobe_ref.sim.pcode.state.State`
that returns the index of the next op, or :data:`EXIT` after setting ``State.next_pc`` (a
branch out of the instruction).  Relative branches (a target in the constant space) move
inside the instruction's op list.  What differs per ISA (division, CALLOTHERs, the zero
register, indirect branch targets) comes from the :class:`~kprobe_ref.sim.pcode.isa.base.
IsaRecord`.  IMARKs are dropped; an opcode without semantics compiles to an op that stops
with a FAULT naming it.

:meth:`Compiler.translation` compiles a whole instruction independently of any CPU (a
:class:`Translation`, which the CPU may cache for every CPU of the ISA);
:meth:`Translation.bind` makes it one function of a CPU's state returning the next PC: the
fast path of :mod:`kprobe_ref.sim.pcode.fast` when the compiler generates it and the
instruction allows it, else a loop over the closures.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pypcode

from kprobe_ref import bits
from kprobe_ref.bits import BV
from kprobe_ref.sim.cpu import StopKind
from kprobe_ref.sim.pcode.fast import FastCode, FastCompiler, InsnFn
from kprobe_ref.sim.pcode.isa.base import IsaRecord
from kprobe_ref.sim.pcode.ops import (
    BINARY,
    DIVIDE,
    SHIFTS,
    UNARY,
    callother_action,
    float_semantics,
)
from kprobe_ref.sim.pcode.state import IntegerState, Space, State, Vn, vn
from kprobe_ref.sim.pcode.trap import Trap

__all__ = ["EXIT", "CompiledInsn", "Compiler", "InsnFn", "Op", "Translation", "run_ops"]

EXIT = -1
"""What a compiled op returns when the instruction continues at ``State.next_pc``."""

Op = Callable[[State], int]
"""A compiled P-code op: it runs on a state and returns the index of the next op or EXIT."""


@dataclass
class CompiledInsn:
    """A cached, compiled instruction: ``run`` executes it and returns the next PC;
    ``fast`` tells whether ``run`` is generated code."""

    pc: int
    length: int
    mnemonic: str
    run: InsnFn
    fast: bool = False


def run_ops(pc: int, length: int, mnemonic: str, ops: Sequence[Op],
            pc_vn: Vn | None) -> InsnFn:
    """Return the function running the closures ``ops`` of one instruction: the program
    counter ``pc_vn`` (when the instruction reads it) is written with ``pc`` first; the
    result is ``next_pc`` after a branch out, else ``pc + length`` (modulo 2**64)."""
    n = len(ops)
    fall = (pc + length) & 0xFFFF_FFFF_FFFF_FFFF

    def run(st: State) -> int:
        if pc_vn is not None:
            st.set(pc_vn, pc)
        i = 0
        while 0 <= i < n:
            i = ops[i](st)
        if i == EXIT:
            nxt = st.next_pc
            if not bits.is_concrete(nxt):
                raise Trap(StopKind.FAULT, detail=f"symbolic branch target in {mnemonic}")
            return nxt & 0xFFFF_FFFF_FFFF_FFFF
        return fall

    return run


@dataclass
class Translation:
    """One compiled instruction not yet bound to a CPU: its bytes ``code``, its generic
    ``closures`` and the program counter's varnode ``pc_vn`` when it reads it.  Its fast
    code is generated on demand (:meth:`fast_code`) from ``pending``: the pypcode
    translation (kept alive) and the ops, or None once generated or when the compiler
    generates no fast path."""

    pc: int
    code: bytes
    mnemonic: str
    closures: tuple[Op, ...]
    pc_vn: Vn | None
    pending: tuple[FastCompiler, object, tuple[Any, ...]] | None
    fast: FastCode | None = None

    @property
    def length(self) -> int:
        """The instruction's length in bytes."""
        return len(self.code)

    @property
    def generated(self) -> bool:
        """Whether the fast path was generated (or found impossible) already."""
        return self.pending is None

    def fast_code(self) -> FastCode | None:
        """The fast path of the instruction, generated the first time it is asked for;
        None when the instruction runs on its closures."""
        if self.pending is not None:
            generator, _, body = self.pending
            self.fast = generator.compile(self.pc, self.length, self.mnemonic, body,
                                          self.closures, self.pc_vn)
            self.pending = None
        return self.fast

    def generic(self, state: IntegerState) -> CompiledInsn:
        """Return the instruction running on its closures."""
        return CompiledInsn(self.pc, self.length, self.mnemonic, run_ops(
            self.pc, self.length, self.mnemonic, self.closures, self.pc_vn))

    def bind(self, state: IntegerState) -> CompiledInsn:
        """Return the instruction as it runs on ``state``: generated code if any (made now
        if not yet), else the closures."""
        fast = self.fast_code()
        if fast is not None:
            return CompiledInsn(self.pc, self.length, self.mnemonic, fast.bind(state),
                                fast=True)
        return self.generic(state)


class Compiler:
    """Turns the P-code of one instruction of ``isa`` into closures (see the module
    docstring); ``pc_vn`` is the program counter's varnode and ``zero_vn`` the hard-wired
    zero register's, if the ISA has one.  With ``fast``, :meth:`translation` also
    generates the fast path."""

    def __init__(self, isa: IsaRecord, pc_vn: Vn, zero_vn: Vn | None, fast: bool = False) -> None:
        self.isa = isa
        self.pc_vn = pc_vn
        self.zero_vn = zero_vn
        self.fast = FastCompiler(self._out, isa.indirect_mask) if fast else None

    def compile(self, pc: int, mnemonic: str, ops: Sequence[Any]) -> list[Op]:
        """Compile the ops of one instruction (IMARKs dropped)."""
        body = [op for op in ops if op.opcode != pypcode.OpCode.IMARK]
        return [self._op(pc, mnemonic, i, op) for i, op in enumerate(body)]

    def translation(self, pc: int, code: bytes, mnemonic: str, tx: Any) -> Translation:
        """Compile one instruction (its bytes ``code`` and pypcode translation ``tx``) into
        a :class:`Translation` (its fast path is generated when first asked for)."""
        body = tuple(op for op in tx.ops if op.opcode != pypcode.OpCode.IMARK)
        closures = tuple(self._op(pc, mnemonic, i, op) for i, op in enumerate(body))
        reads_pc = any(vn(v) == self.pc_vn for op in body for v in op.inputs)
        pc_vn = self.pc_vn if reads_pc else None
        pending = None if self.fast is None else (self.fast, tx, body)
        return Translation(pc, code, mnemonic, closures, pc_vn, pending)

    def _unimplemented(self, what: str, mnemonic: str, pc: int) -> Op:
        detail = f"unimplemented {what} in {mnemonic} at {pc:#x}"

        def op(st: State) -> int:
            raise Trap(StopKind.FAULT, detail=detail)

        return op

    def _out(self, op: Any) -> Vn:
        out = vn(op.output)
        if self.zero_vn is not None and out.space is Space.REGISTER and (
            self.zero_vn.offset <= out.offset < self.zero_vn.offset + self.zero_vn.size
        ):
            return Vn(Space.UNIQUE, -1, out.size)  # the hard-wired zero register
        return out

    def _op(self, pc: int, mnemonic: str, i: int, op: Any) -> Op:
        name = op.opcode.name
        ins = [vn(v) for v in op.inputs]
        nxt = i + 1
        if name in BINARY or name in SHIFTS:
            return self._binary(BINARY.get(name) or SHIFTS[name], ins, self._out(op), nxt)
        if name in UNARY:
            return self._unary(UNARY[name], ins[0], self._out(op), nxt)
        if name in DIVIDE:
            return self._division(name, ins, self._out(op), nxt, mnemonic)
        if name.startswith("FLOAT_"):
            return self._float(name, ins, op, nxt) or self._unimplemented(name, mnemonic, pc)
        handler = getattr(self, "_op_" + name.lower(), None)
        if handler is None:
            return self._unimplemented(name, mnemonic, pc)
        return handler(pc, mnemonic, i, op, ins)  # type: ignore[no-any-return]

    @staticmethod
    def _binary(fn: Callable[[BV, BV, int], BV], ins: list[Vn], out: Vn, nxt: int) -> Op:
        a_vn, b_vn = ins
        w = 8 * a_vn.size
        if b_vn.space is Space.CONST:
            b_const = b_vn.offset & bits.mask(8 * b_vn.size)

            def op_k(st: State) -> int:
                st.set(out, fn(st.get(a_vn), b_const, w))
                return nxt

            return op_k

        def op(st: State) -> int:
            st.set(out, fn(st.get(a_vn), st.get(b_vn), w))
            return nxt

        return op

    @staticmethod
    def _unary(fn: Callable[[BV, int, int], BV], a_vn: Vn, out: Vn, nxt: int) -> Op:
        wi, wo = 8 * a_vn.size, 8 * out.size

        def op(st: State) -> int:
            st.set(out, fn(st.get(a_vn), wi, wo))
            return nxt

        return op

    def _division(self, name: str, ins: list[Vn], out: Vn, nxt: int, mnemonic: str) -> Op:
        a_vn, b_vn = ins
        w = 8 * a_vn.size
        div = self.isa.division(mnemonic)

        def op(st: State) -> int:
            st.set(out, div(name, st.get(a_vn), st.get(b_vn), w))
            return nxt

        return op

    def _float(self, name: str, ins: list[Vn], raw: Any, nxt: int) -> Op | None:
        out = vn(raw.output)
        fn = float_semantics(name, ins, out)
        if fn is None:
            return None

        def op(st: State) -> int:
            st.set(out, fn([st.get(v) for v in ins]))
            return nxt

        return op

    # ---- data movement and pieces

    def _op_load(self, pc: int, mnem: str, i: int, op: Any, ins: list[Vn]) -> Op:
        addr_vn, out = ins[1], self._out(op)

        def load(st: State) -> int:
            st.set(out, st.load(st.get(addr_vn), out.size))
            return i + 1

        return load

    def _op_store(self, pc: int, mnem: str, i: int, op: Any, ins: list[Vn]) -> Op:
        addr_vn, val_vn = ins[1], ins[2]

        def store(st: State) -> int:
            st.store(st.get(addr_vn), val_vn.size, st.get(val_vn))
            return i + 1

        return store

    def _op_piece(self, pc: int, mnem: str, i: int, op: Any, ins: list[Vn]) -> Op:
        hi_vn, lo_vn, out = ins[0], ins[1], self._out(op)
        w_hi, w_lo = 8 * hi_vn.size, 8 * lo_vn.size

        def piece(st: State) -> int:
            st.set(out, bits.concat(st.get(hi_vn), st.get(lo_vn), w_lo, w_hi))
            return i + 1

        return piece

    def _op_subpiece(self, pc: int, mnem: str, i: int, op: Any, ins: list[Vn]) -> Op:
        src, out = ins[0], self._out(op)
        lo = 8 * ins[1].offset
        hi = min(lo + 8 * out.size, 8 * src.size) - 1
        wo = 8 * out.size

        def subpiece(st: State) -> int:
            st.set(out, bits.zext(bits.extract(st.get(src), hi, lo), hi - lo + 1, wo))
            return i + 1

        return subpiece

    # ---- control flow

    def _branch_to(self, i: int, target: Vn) -> Callable[[State], int]:
        """Return how to leave op ``i`` for a direct target: an op index (constant space:
        a relative branch inside the instruction) or EXIT with ``next_pc`` set."""
        if target.space is Space.CONST:
            dest = i + bits.to_signed(target.offset, 64)
            return lambda st: dest
        addr = target.offset

        def leave(st: State) -> int:
            st.next_pc = addr
            return EXIT

        return leave

    def _op_branch(self, pc: int, mnem: str, i: int, op: Any, ins: list[Vn]) -> Op:
        return self._branch_to(i, ins[0])

    _op_call = _op_branch

    def _op_cbranch(self, pc: int, mnem: str, i: int, op: Any, ins: list[Vn]) -> Op:
        taken, cond = self._branch_to(i, ins[0]), ins[1]

        def cbranch(st: State) -> int:
            c = st.get(cond)
            if not bits.is_concrete(c):
                raise Trap(StopKind.FAULT, detail="symbolic branch condition")
            return taken(st) if c else i + 1

        return cbranch

    def _op_branchind(self, pc: int, mnem: str, i: int, op: Any, ins: list[Vn]) -> Op:
        target, align = ins[0], self.isa.indirect_mask

        def branchind(st: State) -> int:
            st.next_pc = st.get(target)
            if align is not None:
                st.next_pc = bits.and_(st.next_pc, align)
            return EXIT

        return branchind

    _op_callind = _op_branchind
    _op_return = _op_branchind

    # ---- user-defined operations

    def _op_callother(self, pc: int, mnem: str, i: int, op: Any, ins: list[Vn]) -> Op:
        name = op.inputs[0].getUserDefinedOpName()
        spec = self.isa.callothers.get(name)
        if spec is None:
            return self._unimplemented(f"CALLOTHER {name}", mnem, pc)
        args = ins[1:]
        out = self._out(op) if op.output is not None else None
        detail = f"{name} in {mnem} at {pc:#x}"
        run = callother_action(spec, args, detail)

        def callother(st: State) -> int:
            result = run(st)
            if out is not None:
                st.set(out, result)
            return i + 1

        return callother
