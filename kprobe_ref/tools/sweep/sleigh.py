"""SLEIGH's view of one instruction word: Ghidra's specification, through pypcode.

A word is *undecodable* (no constructor matches), *unimplemented* (it decodes but has no
P-code semantics) or decodable, and then its P-code says what it does to control flow, as a
small set of flags:

- ``direct`` / ``cond``: a ``BRANCH`` or ``CBRANCH`` to an address in the ``ram`` space
  other than the fall-through; branches inside the P-code, to the ``const`` space, are the
  instruction's own loops and do not count;
- ``branch-next``: a ``BRANCH`` or ``CBRANCH`` to the fall-through address.  Specifications
  use it to end an instruction early (riscv64 ``FMIN`` on a NaN), and ``B .+4`` is one: it
  does not depend on where the word runs, so it never makes stepping wrong, but a simulated
  branch may legitimately show only this;
- ``indirect``, ``call``, ``call-indirect``, ``return``: ``BRANCHIND``, ``CALL``,
  ``CALLIND``, ``RETURN``;
- ``reads-pc``: a value other than a branch destination depends on the instruction's
  address (``ADR``, a literal load, the link value of a call);
- ``writes-pc``: an operation writes the ``pc`` register, other than to hold the target of
  an indirect branch, call or return (Ghidra's AArch64 ``BR Xn`` is ``pc = Xn; goto [pc]``;
  reading ``pc`` after such a write is not a PC read either);
- ``trap``: a user-defined operation that raises an exception (system call, breakpoint,
  halt, exception return, a bounds-check exception); the ``BRANCHIND`` that follows such
  an operation (the exception entry) and the ``CBRANCH`` to the fall-through that guards a
  conditional one (LoongArch ``ASRTLE.D``) are not counted as branches.

``reads-pc`` is decided the way the PC-independence test decides it: a word whose P-code
mentions a constant within 2^40 of its own (unusual, high) address is translated again at a
second address, and the two translations are compared with the fall-through address and a
trap's own address normalised.  Words are translated in batches (one ``translate`` call per
run of decodable words) straight from the shard's buffer.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

import pypcode

__all__ = ["LANGS", "SleighView", "class_name"]

LANGS = {"aarch64": "AARCH64:LE:64:v8A", "riscv64": "RISCV:LE:64:RV64GC",
         "loongarch64": "Loongarch:LE:64:lp64d"}
"""The Ghidra language of each ISA."""

VERSION = "2"
"""The classification's version: checkpoints made by another are not reused."""

UNDECODABLE = -1
"""Flags value of a word no constructor matches."""
UNIMPLEMENTED = -2
"""Flags value of a word that decodes but has no P-code."""
DIRECT, COND, INDIRECT, CALL, CALL_IND, RETURN, READS_PC, WRITES_PC, TRAP, NEXT = (
    1 << i for i in range(10))
_NAMES = ((CALL, "call"), (CALL_IND, "call-indirect"), (RETURN, "return"),
          (INDIRECT, "branch-indirect"), (COND, "branch-cond"), (DIRECT, "branch"),
          (NEXT, "branch-next"), (READS_PC, "reads-pc"), (WRITES_PC, "writes-pc"),
          (TRAP, "trap"))

BASE = 0x6A5C_0000_0000_0000
"""Where batches are translated: far from any immediate an instruction can hold."""
SECOND = 0x1357_9BDF_0000_0000
"""The second address a PC-read candidate is translated at."""
NEAR = 1 << 40
TRAP_OPS = re.compile(
    r"(?i)^(callsupervisor|callhypervisor|callsecuremonitor|softwarebreakpoint|halt|"
    r"dcpsinstruction|undefinedinstructionexception|exceptionreturn|ecall|ebreak|syscall|"
    r"break|dbcl|hvcl|ertn|idle|.*exception.*|.*trap.*)$")
"""User-defined operations (by name) that raise an exception or stop the CPU."""

_OP = pypcode.OpCode
_BRANCHES = {_OP.BRANCH, _OP.CBRANCH}
_KIND = {_OP.BRANCHIND: INDIRECT, _OP.CALL: CALL, _OP.CALLIND: CALL_IND,
         _OP.RETURN: RETURN}
_ADDRESS_INPUT0 = {_OP.LOAD, _OP.STORE, _OP.CALLOTHER}
"""Operations whose first input is a space identifier or an operation index."""
_BRANCH, _CBRANCH, _BRANCHIND, _CALL, _CALLIND, _RETURN = (
    _OP.BRANCH, _OP.CBRANCH, _OP.BRANCHIND, _OP.CALL, _OP.CALLIND, _OP.RETURN)
_CALLOTHER, _LOAD, _STORE, _IMARK = _OP.CALLOTHER, _OP.LOAD, _OP.STORE, _OP.IMARK
_MASK64 = (1 << 64) - 1
_SPAN = 2 * NEAR


def class_name(flags: int) -> str:
    """The SLEIGH class of a flags value: ``undecodable``, ``unimplemented``, ``plain`` or
    the set flags joined by ``+`` (strongest control transfer first)."""
    if flags == UNDECODABLE:
        return "undecodable"
    if flags == UNIMPLEMENTED:
        return "unimplemented"
    names = [n for bit, n in _NAMES if flags & bit]
    if "branch-cond" in names and "branch" in names:
        names.remove("branch")
    return "+".join(names) or "plain"


@lru_cache(maxsize=4)
def _context(isa: str) -> Any:
    return pypcode.Context(LANGS[isa])


def _near(value: int, addr: int) -> bool:
    return (value - addr + NEAR) % (1 << 64) < 2 * NEAR


class SleighView:
    """Classify the words of one buffer (``width`` bits each) for ``isa``."""

    def __init__(self, isa: str, width: int) -> None:
        self.isa, self.size = isa, width // 8
        self.ctx = _context(isa)
        pc = self.ctx.registers["pc"]
        self.pc_space, self.pc_off = pc.space.name, pc.offset
        self._trap_ops: dict[int, bool] = {}

    def classify(self, buf: bytes) -> list[int]:
        """The flags of each ``size``-byte word of ``buf`` (translated at ``BASE`` onwards)."""
        n = len(buf) // self.size
        out = [UNDECODABLE] * n
        i = 0
        while i < n:
            try:
                tr = self.ctx.translate(buf, BASE + i * self.size, i * self.size,
                                        (n - i) * self.size, 512)
            except pypcode.BadDataError:
                i += 1
                continue
            except pypcode.UnimplError:
                out[i] = UNIMPLEMENTED
                i += 1
                continue
            done = 0
            for addr, length, ops in _split(tr.ops):
                j = (addr - BASE) // self.size
                if addr != BASE + j * self.size or j != i + done or length != self.size:
                    break
                out[j] = self._flags(ops, addr, buf[j * self.size : (j + 1) * self.size])
                done += 1
            i += max(done, 1)
        return out

    def _trap(self, v: Any) -> bool:
        idx = v.offset
        hit = self._trap_ops.get(idx)
        if hit is None:
            hit = self._trap_ops[idx] = bool(TRAP_OPS.match(v.getUserDefinedOpName() or ""))
        return hit

    def _flags(self, ops: list[Any], addr: int, word: bytes) -> int:
        """The flags of one instruction's P-code.  Opcodes are compared by identity and a
        varnode's space is looked at only when its offset is near the address or is the
        ``pc`` register's: this loop is most of the sweep's time."""
        flags, candidate, pc_set = 0, False, False
        pc_space, pc_off = self.pc_space, self.pc_off
        lo, nxt = addr - NEAR, addr + self.size
        for op in ops:
            opc = op.opcode
            inputs = op.inputs
            if opc is _BRANCH or opc is _CBRANCH:
                dest = inputs[0]
                if dest.space.name == "ram":
                    if dest.offset == nxt:
                        flags |= NEXT
                    else:
                        flags |= COND if opc is _CBRANCH else DIRECT
                inputs = inputs[1:]
            elif opc is _BRANCHIND or opc is _CALL or opc is _CALLIND or opc is _RETURN:
                flags |= _KIND[opc]
                inputs = inputs[1:]
            elif opc is _CALLOTHER or opc is _LOAD or opc is _STORE:
                if opc is _CALLOTHER and self._trap(inputs[0]):
                    flags |= TRAP
                inputs = inputs[1:]
            for v in inputs:
                off = v.offset
                if (off - lo) & _MASK64 < _SPAN:
                    if v.space.name in ("const", "ram"):
                        candidate = True
                elif off == pc_off and not pc_set and v.space.name == pc_space:
                    flags |= READS_PC
            out = op.output
            if out is not None and out.offset == pc_off and out.space.name == pc_space:
                flags |= WRITES_PC
                pc_set = True
        if candidate and self._depends_on_address(word, addr):
            flags |= READS_PC
        if flags & (INDIRECT | CALL_IND | RETURN):
            flags &= ~WRITES_PC
        if flags & TRAP:
            flags &= ~(INDIRECT | DIRECT | COND | NEXT)
        return flags

    def _depends_on_address(self, word: bytes, addr: int) -> bool:
        """Whether ``word``'s P-code at ``addr`` and at :data:`SECOND` differ other than in
        the fall-through address and a trap's own address."""
        return _normalised(self.ctx, word, addr) != _normalised(self.ctx, word, SECOND)


def _split(ops: list[Any]) -> Iterator[tuple[int, int, list[Any]]]:
    """(address, length, operations) of each instruction of a translation."""
    addr = length = -1
    cur: list[Any] = []
    for op in ops:
        if op.opcode is _IMARK:
            if addr >= 0:
                yield addr, length, cur
            ins = op.inputs
            v = ins[0]
            addr, cur = v.offset, []
            length = v.size if len(ins) == 1 else sum(x.size for x in ins)
        else:
            cur.append(op)
    if addr >= 0:
        yield addr, length, cur


def _normalised(ctx: Any, word: bytes, addr: int) -> list[tuple[object, ...]]:
    tr = ctx.translate(word, addr, 0, len(word), 1)
    nxt = addr + len(word)
    ops: list[tuple[object, ...]] = []
    for op in tr.ops:
        if op.opcode == _OP.IMARK:
            continue
        trap = op.opcode == _OP.CALLOTHER
        vs = [op.output, *op.inputs] if op.output is not None else [None, *op.inputs]
        row: list[object] = [op.opcode]
        for k, v in enumerate(vs):
            if v is None:
                row.append(None)
            elif op.opcode in _BRANCHES and k == 1 and v.offset == nxt:
                row.append("NEXT")
            elif trap and v.space.name == "const" and v.offset in (addr, nxt):
                row.append("OWN")
            elif op.opcode in _ADDRESS_INPUT0 and k == 1:
                row.append(v.offset if op.opcode == _OP.CALLOTHER else "SPACE")
            else:
                row.append((v.space.name, v.offset, v.size))
        ops.append(tuple(row))
    return ops
