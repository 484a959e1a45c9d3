"""The concrete fast path: one instruction's P-code as one generated Python function.

The CPU runs on an :class:`~kprobe_ref.sim.pcode.state.IntegerState`, so every value is a
plain integer.  :class:`FastCompiler` writes the P-code of a whole instruction as the source
of a single function over plain integers and compiles it once per translation (the CPU
asks for it after a few executions on the closures, ``kprobe_ref.sim.pcode.cpu.WARM_UP``).
The function computes exactly what the generic closures of
:mod:`kprobe_ref.sim.pcode.compiler` compute (which follow :mod:`kprobe_ref.bits`); it only
avoids their per-value costs:

- masks, sign bits and constants are written into the source as literals, and an operation
  is an expression such as ``(v1 + v2) & 0xffffffffffffffff``;
- a register is a slice of the register file's bytearray, bound by the function when it is
  compiled (:meth:`~kprobe_ref.sim.pcode.state.RegisterFile.chunk`), and a register read
  again after this instruction read or wrote it is taken from the local variable holding
  it (every write still reaches the register file at once);
- a unique temporary is a local variable;
- the function returns the address of the next instruction (a branch out, or
  ``pc + length``).

Every value an expression produces has a known upper bound (its width in bits), and a mask
is written only where the bound exceeds the width of the destination.

Ops without a plain-integer form here (division, floating point, CALLOTHERs, direct RAM
varnodes, an opcode without semantics, a SUBPIECE beyond its input) call their generic
closure from inside the generated function; the unique temporaries it reads are handed
to it through ``IntegerState.unique`` and its result is read back.  An instruction that branches
inside itself (a P-code relative branch), reads a temporary it did not write first with the
same offset and at least the same size, or touches a register across two chunks of the
register file is not generated at all: it runs on the generic closures.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import CodeType
from typing import Any

from kprobe_ref.bits import mask
from kprobe_ref.sim.pcode.memory import PAGE_SHIFT, PAGE_SIZE
from kprobe_ref.sim.pcode.state import IntegerState, Space, State, Vn, vn

__all__ = ["FastCode", "FastCompiler", "InsnFn"]

InsnFn = Callable[[State], int]
"""A whole compiled instruction: it runs on the state and returns the next PC."""

_M64 = mask(64)

_BRANCHES = frozenset({"BRANCH", "CALL", "CBRANCH", "BRANCHIND", "CALLIND", "RETURN"})


class _Unsupported(Exception):
    """The instruction is left to the generic closures."""


class _Val:
    """An expression of generated source and the width in bits that bounds its value."""

    __slots__ = ("expr", "width")

    def __init__(self, expr: str, width: int) -> None:
        self.expr = expr
        self.width = width


def _hex(x: int) -> str:
    """A literal of the generated source (hexadecimal, so masks read as masks)."""
    return hex(x)


class _Writer:
    """The source of one instruction's function while it is being generated."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.env: dict[str, Any] = {"FB": int.from_bytes}
        """Globals that do not depend on the CPU: ``FB`` and the generic closures."""
        self.chunks: set[int] = set()
        """Register file chunks the function touches (bound per CPU as ``C<n>``)."""
        self.n = 0
        self.regs: dict[tuple[int, int], str] = {}
        """Registers whose current value a local (or a literal) holds: (offset, size)."""
        self.uniques: dict[int, tuple[str, int]] = {}
        """Unique temporaries written so far: offset -> (local, size in bytes)."""

    def local(self, expr: str) -> str:
        """Assign ``expr`` to a fresh local and return its name."""
        name = f"v{self.n}"
        self.n += 1
        self.lines.append(f"    {name} = {expr}")
        return name

    def bind(self, prefix: str, obj: object) -> str:
        """Make ``obj`` a global of the generated function and return its name."""
        name = f"{prefix}{len(self.env)}"
        self.env[name] = obj
        return name

    def chunk(self, off: int, size: int) -> tuple[str, int]:
        """The global naming the register file chunk holding ``size`` bytes at ``off``,
        and the offset inside it."""
        lo = off & (PAGE_SIZE - 1)
        if lo + size > PAGE_SIZE:
            raise _Unsupported("register across two chunks")
        c = off >> PAGE_SHIFT
        self.chunks.add(c)
        return f"C{c}", lo

    # ---- varnodes

    def read(self, v: Vn) -> _Val:
        """Return the value of ``v`` (in range of its width)."""
        w = 8 * v.size
        if v.space is Space.CONST:
            return _Val(_hex(v.offset & mask(w)), w)
        if v.space is Space.REGISTER:
            held = self.regs.get((v.offset, v.size))
            if held is not None:
                return _Val(held, w)
            c, lo = self.chunk(v.offset, v.size)
            expr = f"{c}[{lo}]" if v.size == 1 else f"FB({c}[{lo}:{lo + v.size}], 'little')"
            name = self.local(expr)
            self.regs[(v.offset, v.size)] = name
            return _Val(name, w)
        if v.space is Space.UNIQUE:
            hit = self.uniques.get(v.offset)
            if hit is None or hit[1] < v.size:
                raise _Unsupported("unique temporary read before an exact write")
            name, size = hit
            return _Val(name if size == v.size else f"({name} & {_hex(mask(w))})", w)
        raise _Unsupported("direct RAM varnode")

    def write(self, v: Vn, val: _Val) -> None:
        """Write ``val`` to ``v`` modulo its width."""
        w = 8 * v.size
        expr = val.expr if val.width <= w else f"({val.expr}) & {_hex(mask(w))}"
        name = self.local(expr)
        if v.space is Space.UNIQUE:
            self.uniques[v.offset] = (name, v.size)
            return
        if v.space is not Space.REGISTER:
            raise _Unsupported("write outside registers and temporaries")
        c, lo = self.chunk(v.offset, v.size)
        if v.size == 1:
            self.lines.append(f"    {c}[{lo}] = {name}")
        else:
            self.lines.append(f"    {c}[{lo}:{lo + v.size}] = {name}.to_bytes({v.size}, 'little')")
        end = v.offset + v.size
        self.regs = {k: h for k, h in self.regs.items() if k[0] + k[1] <= v.offset or end <= k[0]}
        self.regs[(v.offset, v.size)] = name

    def forget_registers(self) -> None:
        """Forget the registers held in locals (after a generic op, which may write any)."""
        self.regs = {}


# ---------------------------------------------------------------------------------------
# Operation templates: each takes the input values and widths and returns the result.


def _binop(name: str, a: _Val, b: _Val, w: int, out: _Writer) -> _Val | None:
    """Integer and boolean binary ops, comparisons and flags (``ops.BINARY``)."""
    m = _hex(mask(w))
    if b.width > w:
        b = _Val(f"({b.expr} & {m})", w)
    if a.width > w:
        a = _Val(f"({a.expr} & {m})", w)
    x, y = a.expr, b.expr
    sign = _hex(1 << (w - 1))
    simple = {
        "INT_ADD": (f"({x} + {y}) & {m}", w),
        "INT_SUB": (f"({x} - {y}) & {m}", w),
        "INT_MULT": (f"({x} * {y}) & {m}", w),
        "INT_AND": (f"{x} & {y}", w),
        "INT_OR": (f"{x} | {y}", w),
        "INT_XOR": (f"{x} ^ {y}", w),
        "BOOL_AND": (f"{x} & {y}", w),
        "BOOL_OR": (f"{x} | {y}", w),
        "BOOL_XOR": (f"{x} ^ {y}", w),
        "INT_EQUAL": (f"1 if {x} == {y} else 0", 1),
        "INT_NOTEQUAL": (f"1 if {x} != {y} else 0", 1),
        "INT_LESS": (f"1 if {x} < {y} else 0", 1),
        "INT_LESSEQUAL": (f"1 if {x} <= {y} else 0", 1),
        "INT_SLESS": (f"1 if ({x} ^ {sign}) < ({y} ^ {sign}) else 0", 1),
        "INT_SLESSEQUAL": (f"1 if ({x} ^ {sign}) <= ({y} ^ {sign}) else 0", 1),
        "INT_CARRY": (f"1 if {x} + {y} > {m} else 0", 1),
    }
    if name in simple:
        expr, width = simple[name]
        return _Val(expr, width)
    top = w - 1
    if name == "INT_SCARRY":
        r = out.local(f"({x} + {y}) & {m}")
        return _Val(f"(({r} ^ {x}) & ({r} ^ {y})) >> {top}", 1)
    if name == "INT_SBORROW":
        r = out.local(f"({x} - {y}) & {m}")
        return _Val(f"(({x} ^ {y}) & ({x} ^ {r})) >> {top}", 1)
    return None


def _shift(name: str, a: _Val, n: _Val, n_const: int | None, w: int) -> _Val | None:
    """``INT_LEFT``, ``INT_RIGHT``, ``INT_SRIGHT``: the amount is not reduced modulo the
    width; amounts of ``w`` or more give 0 (all sign bits for the arithmetic shift)."""
    m = _hex(mask(w))
    x = a.expr if a.width <= w else f"({a.expr} & {m})"
    sign = _hex(1 << (w - 1))
    if n_const is not None:
        if name == "INT_LEFT":
            return _Val(f"({x} << {n_const}) & {m}" if n_const < w else "0", w)
        if name == "INT_RIGHT":
            return _Val(f"{x} >> {n_const}" if n_const < w else "0", w)
        return _Val(f"((({x} ^ {sign}) - {sign}) >> {min(n_const, w)}) & {m}", w)
    s = n.expr
    if name == "INT_LEFT":
        return _Val(f"(({x} << {s}) & {m} if {s} < {w} else 0)", w)
    if name == "INT_RIGHT":
        return _Val(f"({x} >> {s} if {s} < {w} else 0)", w)
    return _Val(f"((({x} ^ {sign}) - {sign}) >> ({s} if {s} < {w} else {w})) & {m}", w)


def _unop(name: str, a: _Val, wi: int, wo: int) -> _Val | None:
    """``ops.UNARY``: the input is in range of its width ``wi``; ``wo`` is the output's."""
    x = a.expr
    if name in ("COPY", "INT_ZEXT"):
        return _Val(x, a.width)
    if name == "INT_SEXT":
        sign = _hex(1 << (wi - 1))
        return _Val(f"(({x} ^ {sign}) - {sign}) & {_hex(mask(wo))}", wo)
    if name == "INT_2COMP":
        return _Val(f"-{x} & {_hex(mask(wi))}", wi)
    if name == "INT_NEGATE":
        return _Val(f"{x} ^ {_hex(mask(wi))}", wi)
    if name == "BOOL_NEGATE" and wi == 8:
        return _Val(f"{x} ^ 1", 8)
    if name == "POPCOUNT":
        return _Val(f"({x}).bit_count() & {_hex(mask(wo))}", wo)
    if name == "LZCOUNT":
        return _Val(f"({wi} - ({x}).bit_length()) & {_hex(mask(wo))}", wo)
    return None


# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FastCode:
    """The compiled function of one instruction, not yet bound to a CPU: ``code`` defines
    ``insn(st)``; ``env`` holds its CPU-independent globals and ``chunks`` the register
    file chunks it uses."""

    code: CodeType
    env: dict[str, Any]
    chunks: tuple[int, ...]

    def bind(self, state: IntegerState) -> InsnFn:
        """Return the function running on ``state`` (its register file and memory)."""
        env = dict(self.env)
        env["mem_load"] = state.mem.load
        env["mem_store"] = state.mem.store
        for c in self.chunks:
            env[f"C{c}"] = state.regs.chunk(c)
        exec(self.code, env)  # the source was generated by FastCompiler from its templates
        fn: InsnFn = env["insn"]
        return fn


class FastCompiler:
    """Generates the function of one instruction.

    ``out`` maps an op's output varnode as the generic compiler does (the hard-wired zero
    register becomes a discarded temporary)."""

    def __init__(self, out: Callable[[Any], Vn], indirect_mask: int | None) -> None:
        self.out = out
        self.indirect_mask = indirect_mask

    def compile(self, pc: int, length: int, mnemonic: str, body: Sequence[Any],
                generic: Sequence[Callable[[State], int]], pc_vn: Vn | None) -> FastCode | None:
        """Return the code of the instruction whose ops (IMARKs dropped) are ``body`` and
        whose generic closures are ``generic``, or None when it is left to them.
        ``pc_vn`` is the program counter's varnode when the instruction reads it: it is
        then written with ``pc`` first, as the generic path does."""
        w = _Writer()
        try:
            if pc_vn is not None:
                w.write(pc_vn, _Val(_hex(pc & mask(8 * pc_vn.size)), 8 * pc_vn.size))
            for i, op in enumerate(body):
                self._op(w, op, generic[i])
        except _Unsupported:
            return None
        w.lines.append(f"    return {_hex((pc + length) & _M64)}")
        src = "def insn(st):\n" + "\n".join(w.lines) + "\n"
        code = compile(src, f"<pcode {mnemonic} at {pc:#x}>", "exec")
        return FastCode(code, w.env, tuple(sorted(w.chunks)))

    def _op(self, w: _Writer, op: Any, generic: Callable[[State], int]) -> None:
        name = op.opcode.name
        ins = [vn(v) for v in op.inputs]
        if name in _BRANCHES:
            self._branch(w, name, ins)
            return
        direct_ram = any(v.space is Space.RAM for v in ins) or (
            op.output is not None and vn(op.output).space is Space.RAM)
        if name == "STORE" and not direct_ram:
            self._store(w, ins)
            return
        plain = not direct_ram and op.output is not None
        result = self._value(w, name, ins, op) if plain else None
        if result is None:
            self._generic(w, op, ins, generic)
            return
        w.write(self.out(op), result)

    def _value(self, w: _Writer, name: str, ins: list[Vn], op: Any) -> _Val | None:
        """The result of an op computed inline, or None (then its generic closure runs)."""
        if name == "LOAD":
            size = self.out(op).size
            return _Val(f"mem_load({w.read(ins[1]).expr}, {size})", 8 * size)
        if name in ("INT_LEFT", "INT_RIGHT", "INT_SRIGHT"):
            n_const = ins[1].offset & mask(8 * ins[1].size) if ins[1].space is Space.CONST else None
            return _shift(name, w.read(ins[0]), w.read(ins[1]), n_const, 8 * ins[0].size)
        if name == "PIECE":
            hi, lo = w.read(ins[0]), w.read(ins[1])
            return _Val(f"({hi.expr} << {8 * ins[1].size}) | {lo.expr}",
                        8 * (ins[0].size + ins[1].size))
        if name == "SUBPIECE":
            return self._subpiece(w, ins, self.out(op))
        if len(ins) == 2 and name.startswith(("INT_", "BOOL_")):
            return _binop(name, w.read(ins[0]), w.read(ins[1]), 8 * ins[0].size, w)
        if len(ins) == 1:
            return _unop(name, w.read(ins[0]), 8 * ins[0].size, 8 * self.out(op).size)
        return None

    def _subpiece(self, w: _Writer, ins: list[Vn], out: Vn) -> _Val | None:
        lo = 8 * ins[1].offset
        hi = min(lo + 8 * out.size, 8 * ins[0].size) - 1
        if hi < lo:
            return None
        src = w.read(ins[0])
        shifted = src.expr if lo == 0 else f"({src.expr} >> {lo})"
        if src.width - lo <= hi - lo + 1:
            return _Val(shifted, max(src.width - lo, 0))
        return _Val(f"{shifted} & {_hex(mask(hi - lo + 1))}", hi - lo + 1)

    def _store(self, w: _Writer, ins: list[Vn]) -> None:
        """STORE: the value is written to memory, then the CPU is told (cached code)."""
        addr, val = w.read(ins[1]), w.read(ins[2])
        a = w.local(addr.expr)
        w.lines.append(f"    mem_store({a}, {ins[2].size}, {val.expr})")
        w.lines.append(f"    st.on_store({a} & {_hex(_M64)}, {ins[2].size})")

    def _branch(self, w: _Writer, name: str, ins: list[Vn]) -> None:
        target = ins[0]
        if name in ("BRANCHIND", "CALLIND", "RETURN"):
            t = w.read(target)
            keep = _M64 if self.indirect_mask is None else self.indirect_mask & _M64
            expr = t.expr if keep == _M64 and t.width <= 64 else f"{t.expr} & {_hex(keep)}"
            w.lines.append(f"    return {expr}")
            return
        if target.space is Space.CONST:
            raise _Unsupported("relative branch inside the instruction")
        dest = _hex(target.offset & _M64)
        if name == "CBRANCH":
            cond = w.read(ins[1])
            w.lines.append(f"    if {cond.expr}:")
            w.lines.append(f"        return {dest}")
        else:
            w.lines.append(f"    return {dest}")

    def _generic(self, w: _Writer, op: Any, ins: list[Vn],
                 closure: Callable[[State], int]) -> None:
        """Run the op's generic closure: hand it the temporaries it reads, read back the
        temporary it writes, and forget registers held in locals."""
        for v in ins:
            if v.space is Space.UNIQUE:
                hit = w.uniques.get(v.offset)
                if hit is None:
                    raise _Unsupported("unique temporary read before an exact write")
                w.lines.append(f"    st.unique[{v.offset}] = ({hit[0]}, {hit[1]})")
        g = w.bind("G", closure)
        w.lines.append(f"    {g}(st)")
        w.forget_registers()
        if op.output is not None and op.opcode.name != "STORE":
            out = self.out(op)
            if out.space is Space.UNIQUE:
                name = w.local(f"st.unique[{out.offset}][0]")
                w.uniques[out.offset] = (name, out.size)
