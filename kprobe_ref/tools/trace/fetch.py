"""Running fetch programs: the values a probe event records.

:func:`fetch_args` is Linux's ``store_trace_args`` over the programs
:mod:`kprobe_ref.tools.trace.grammar` compiled, with ``process_fetch_insn`` split in the kernel's
stages: a first instruction gives a value (a register, a stack slot, ``$retval``, an
argument, an immediate, ``$comm``), dereferences follow it, then a store reads memory or
keeps the value at the argument's size, a bitfield shifts it, and an array repeats the
store.  What differs between kprobes and uprobes is supplied by a :class:`FetchEnv`:
kernel probes read kernel memory (``+u``/``ustring`` read the current task's user memory),
uprobes read their process's memory; ``$stackN`` beyond the stack and unmapped reads give
0, as ``regs_get_kernel_stack_nth`` and a failed ``copy_from_user`` do.

A memory read that faults ends the argument: a string records ``(fault)``, a scalar 0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from kprobe_ref.ptregs import PtRegs
from kprobe_ref.tools.trace.grammar import Insn, Op, ProbeArg

__all__ = ["FAULT", "Fault", "FetchEnv", "Value", "fetch_args", "fetch_value"]

MAX_STRING_SIZE = 4096
"""``PATH_MAX``: the longest string a fetch records (with its terminating NUL)."""
_MASK = (1 << 64) - 1


class Fault:
    """A string fetch that faulted (printed ``(fault)``)."""

    def __repr__(self) -> str:
        return "FAULT"


FAULT = Fault()
Value = int | str | Fault | list["Value"]


@dataclass
class FetchEnv:
    """What a fetch program may read at one probe hit.

    ``read(addr, n, user)`` returns the bytes or ``None`` when any byte is unmapped;
    ``user`` asks for user memory (of the process the hit is in, or of the current task).
    ``entry_args`` are the ``$argN`` values a return probe saved at function entry."""

    regs: PtRegs
    read: Callable[[int, int, bool], bytes | None]
    comm: str
    user: bool
    args: Callable[[int], int]
    symbolize: Callable[[int], str]
    entry_args: dict[int, int] = field(default_factory=dict)
    file_base: int = 0
    """For uprobes: probe address minus the probe's file offset (``translate_user_vaddr``)."""

    def word(self, addr: int, user: bool) -> int | None:
        data = self.read(addr & _MASK, 8, user)
        return None if data is None else int.from_bytes(data, "little")

    def stack_nth(self, n: int) -> int:
        """``regs_get_kernel_stack_nth`` / ``get_user_stack_nth``: 0 when unreadable."""
        value = self.word(self.regs.sp + 8 * n, self.user)
        return 0 if value is None else value

    def string(self, addr: int, user: bool) -> str | Fault:
        """The NUL-terminated string at ``addr`` (at most ``MAX_STRING_SIZE - 1`` bytes)."""
        out = bytearray()
        while len(out) < MAX_STRING_SIZE - 1:
            chunk = self.read((addr + len(out)) & _MASK, 1, user)
            if chunk is None:
                return FAULT
            if chunk == b"\0":
                break
            out += chunk
        return out.decode("latin-1")


def _first(env: FetchEnv, insn: Insn) -> int | str:
    """Stage 1: the value an argument starts from."""
    op = insn.op
    if op is Op.REG:
        return env.regs.get(insn.reg)
    if op is Op.STACK:
        return env.stack_nth(insn.param)
    if op is Op.STACKP:
        return env.regs.sp
    if op is Op.RETVAL:
        return env.regs.first_ret_value()
    if op is Op.ARG:
        return env.args(insn.param)
    if op is Op.EDATA:
        return env.entry_args.get(insn.param, 0)
    if op is Op.IMM:
        return insn.imm
    if op is Op.FOFFS:
        return (env.file_base + insn.imm) & _MASK
    if op is Op.COMM:
        return env.comm
    if op is Op.DATA:
        return insn.data
    raise AssertionError(f"fetch program starts with {op}")


def _bitfield(insn: Insn, value: int) -> int:
    bits = insn.basesize * 8
    mask = (1 << bits) - 1
    return ((value << insn.lshift) & mask) >> insn.rshift


def _scalar(raw: int, arg: ProbeArg, bf: Insn | None) -> int:
    size = arg.type.size * 8
    value = raw & ((1 << size) - 1)
    if bf is not None:
        value = _bitfield(bf, value)
    if arg.type.signed and value >> (size - 1):
        value -= 1 << size
    return value


def _store(env: FetchEnv, st: Insn, val: int | str, arg: ProbeArg, bf: Insn | None,
           user: bool) -> Value:
    """Stage 3 and 4: store one element."""
    op = st.op
    if op is Op.ST_RAW:
        assert isinstance(val, int)
        return _scalar(val, arg, bf)
    if op in (Op.ST_MEM, Op.ST_UMEM):
        assert isinstance(val, int)
        data = env.read((val + st.offset) & _MASK, st.size, user or op is Op.ST_UMEM)
        return 0 if data is None else _scalar(int.from_bytes(data, "little"), arg, bf)
    if op is Op.ST_SYMSTR:
        assert isinstance(val, int)
        return env.symbolize((val + st.offset) & _MASK)
    if isinstance(val, str):
        return val
    return env.string((val + st.offset) & _MASK, user or op is Op.ST_USTRING)


def fetch_value(env: FetchEnv, arg: ProbeArg) -> Value:
    """Run one argument's fetch program."""
    code = arg.code
    i = 1 if code[0].op is Op.SYMBOL else 0
    val: int | str = _first(env, code[i])
    i += 1
    last = val
    while code[i].op in (Op.DEREF, Op.UDEREF):
        assert isinstance(val, int)
        last = val
        word = env.word(val + code[i].offset, env.user or code[i].op is Op.UDEREF)
        if word is None:
            return _faulted(arg)
        val, i = word, i + 1
    return _store_all(env, code, i, val, last, arg, env.user)


def _store_all(env: FetchEnv, code: list[Insn], i: int, val: int | str, last: int | str,
               arg: ProbeArg, user: bool) -> Value:
    st = code[i]
    bf = code[i + 1] if code[i + 1].op is Op.MOD_BF else None
    if not arg.count:
        return _store(env, st, val, arg, bf, user)
    out: list[Value] = []
    deref = code[i - 1] if i > 0 else None
    for n in range(arg.count):
        if st.op in (Op.ST_STRING, Op.ST_USTRING) and deref is not None and deref.op in (
            Op.DEREF, Op.UDEREF
        ) and isinstance(last, int):
            # An array of strings: the n-th pointer of the array, then its string.
            word = env.word(last + 8 * n + deref.offset, user or deref.op is Op.UDEREF)
            out.append(FAULT if word is None else _store(env, st, word, arg, bf, user))
            continue
        step = val + n * st.size if isinstance(val, int) else val
        out.append(_store(env, st, step, arg, bf, user))
    return out


def _faulted(arg: ProbeArg) -> Value:
    one: Value = FAULT if arg.type.string else 0
    return [one] * arg.count if arg.count else one


def fetch_args(env: FetchEnv, args: list[ProbeArg]) -> list[Value]:
    """Every argument's value, in order (``store_trace_args``)."""
    return [fetch_value(env, a) for a in args]
