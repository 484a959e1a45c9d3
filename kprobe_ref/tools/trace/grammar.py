"""The dynamic-event grammar of tracefs ``kprobe_events`` and ``uprobe_events``.

This module parses one definition the way Linux 6.12 does (``kernel/trace/trace_kprobe.c``
``__trace_kprobe_create``, ``trace_uprobe.c`` ``__trace_uprobe_create`` and the argument
parser of ``trace_probe.c``), built without BTF argument support
(``CONFIG_PROBE_EVENTS_BTF_ARGS`` off: there is no type information in a simulated image)::

    p[:[GRP/][EVENT]] [MOD:]SYM[+offs]|MEMADDR [FETCHARGS]        kprobe
    r[MAXACTIVE][:[GRP/][EVENT]] [MOD:]SYM[+0] [FETCHARGS]        kretprobe
    p[:[GRP/][EVENT]] [MOD:]SYM[+0]%return [FETCHARGS]            kretprobe
    p[:[GRP/][EVENT]] PATH:OFFSET[%return] [FETCHARGS]            uprobe, uretprobe
    r[:[GRP/][EVENT]] PATH:OFFSET [FETCHARGS]                     uretprobe
    -:[GRP/][EVENT] [FETCHARGS]                                   delete

The command is split on white space (``argv_split``: no quoting).  A definition the kernel
refuses raises :class:`DefinitionError` with the kernel's error text and the position its
``error_log`` puts the caret at; the position arithmetic is the kernel's, including where it
is one column off (the ``u`` of ``+u8(...)``).  Each fetch argument compiles to the kernel's
fetch program (:class:`Insn`, at most :data:`FETCH_INSN_MAX` of them), which
:mod:`kprobe_ref.tools.trace.fetch` runs.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass, field

from kprobe_ref.errors import InvalidProbeDefinition
from kprobe_ref.tools.trace.numbers import kstrtol, kstrtouint, kstrtoul, simple_strtoul
from kprobe_ref.tools.trace.regtable import register_field

__all__ = [
    "ERRORS",
    "FETCH_INSN_MAX",
    "MAX_TRACE_ARGS",
    "DefinitionError",
    "Deletion",
    "FetchType",
    "Insn",
    "Op",
    "ProbeArg",
    "ProbeDefinition",
    "ProbeLog",
    "SymbolCounter",
    "parse",
]

LINUX_VERSION = "6.12"
MAX_TRACE_ARGS = 128
MAX_ARGSTR_LEN = 63
MAX_ARRAY_LEN = 64
MAX_ARG_NAME_LEN = 32
MAX_EVENT_NAME_LEN = 64
MAX_PROBE_EVENT_SIZE = 3072
FETCH_INSN_MAX = 16
PARAM_MAX_STACK = 2048
"""``THREAD_SIZE / sizeof(long)``: 16 KiB kernel stacks on all four ISAs."""
KRETPROBE_MAXACTIVE_MAX = 4096
UINT_MAX = 0xFFFF_FFFF

ERRORS: dict[str, str] = {
    "FILE_NOT_FOUND": "Failed to find the given file",
    "NO_REGULAR_FILE": "Not a regular file",
    "BAD_REFCNT": "Invalid reference counter offset",
    "REFCNT_OPEN_BRACE": "Reference counter brace is not closed",
    "BAD_REFCNT_SUFFIX": "Reference counter has wrong suffix",
    "BAD_UPROBE_OFFS": "Invalid uprobe offset",
    "BAD_MAXACT_TYPE": "Maxactive is only for function exit",
    "BAD_MAXACT": "Invalid maxactive number",
    "MAXACT_TOO_BIG": "Maxactive is too big",
    "BAD_PROBE_ADDR": "Invalid probed address or symbol",
    "NON_UNIQ_SYMBOL": "The symbol is not unique",
    "BAD_RETPROBE": "Retprobe address must be an function entry",
    "NO_TRACEPOINT": "Tracepoint is not found",
    "BAD_TP_NAME": "Invalid character in tracepoint name",
    "BAD_ADDR_SUFFIX": "Invalid probed address suffix",
    "NO_GROUP_NAME": "Group name is not specified",
    "GROUP_TOO_LONG": "Group name is too long",
    "BAD_GROUP_NAME": "Group name must follow the same rules as C identifiers",
    "NO_EVENT_NAME": "Event name is not specified",
    "EVENT_TOO_LONG": "Event name is too long",
    "BAD_EVENT_NAME": "Event name must follow the same rules as C identifiers",
    "EVENT_EXIST": "Given group/event name is already used by another event",
    "RETVAL_ON_PROBE": "$retval is not available on probe",
    "NO_RETVAL": "This function returns 'void' type",
    "BAD_STACK_NUM": "Invalid stack number",
    "BAD_ARG_NUM": "Invalid argument number",
    "BAD_VAR": "Invalid $-variable specified",
    "BAD_REG_NAME": "Invalid register name",
    "BAD_MEM_ADDR": "Invalid memory address",
    "BAD_IMM": "Invalid immediate value",
    "IMMSTR_NO_CLOSE": "String is not closed with '\"'",
    "FILE_ON_KPROBE": "File offset is not available with kprobe",
    "BAD_FILE_OFFS": "Invalid file offset value",
    "SYM_ON_UPROBE": "Symbol is not available with uprobe",
    "TOO_MANY_OPS": "Dereference is too much nested",
    "DEREF_NEED_BRACE": "Dereference needs a brace",
    "BAD_DEREF_OFFS": "Invalid dereference offset",
    "DEREF_OPEN_BRACE": "Dereference brace is not closed",
    "COMM_CANT_DEREF": "$comm can not be dereferenced",
    "BAD_FETCH_ARG": "Invalid fetch argument",
    "ARRAY_NO_CLOSE": "Array is not closed",
    "BAD_ARRAY_SUFFIX": "Array has wrong suffix",
    "BAD_ARRAY_NUM": "Invalid array size",
    "ARRAY_TOO_BIG": "Array number is too big",
    "BAD_TYPE": "Unknown type is specified",
    "BAD_STRING": "String accepts only memory argument",
    "BAD_SYMSTRING": "Symbol String doesn't accept data/userdata",
    "BAD_BITFIELD": "Invalid bitfield",
    "ARG_NAME_TOO_LONG": "Argument name is too long",
    "NO_ARG_NAME": "Argument name is not specified",
    "BAD_ARG_NAME": "Argument name must follow the same rules as C identifiers",
    "USED_ARG_NAME": "This argument name is already used",
    "ARG_TOO_LONG": "Argument expression is too long",
    "NO_ARG_BODY": "No argument expression",
    "BAD_INSN_BNDRY": "Probe point is not an instruction boundary",
    "FAIL_REG_PROBE": "Failed to register probe event",
    "DIFF_PROBE_TYPE": "Probe type is different from existing probe",
    "DIFF_ARG_TYPE": "Argument type or name is different from existing probe",
    "SAME_PROBE": "There is already the exact same probe event",
    "NO_EVENT_INFO": "This requires both group and event name to attach",
    "BAD_ATTACH_EVENT": "Attached event does not exist",
    "BAD_ATTACH_ARG": "Attached event does not have this field",
    "NO_EP_FILTER": "No filter rule after 'if'",
    "NOSUP_BTFARG": "BTF is not available or not supported",
    "NO_BTFARG": "This variable is not found at this probe point",
    "NO_BTF_ENTRY": "No BTF entry for this probe point",
    "BAD_VAR_ARGS": "$arg* must be an independent parameter without name etc.",
    "NOFENTRY_ARGS": "$arg* can be used only on function entry or exit",
    "DOUBLE_ARGS": "$arg* can be used only once in the parameters",
    "ARGS_2LONG": "$arg* failed because the argument list is too long",
    "ARGIDX_2BIG": "$argN index is too big",
    "NO_PTR_STRCT": "This is not a pointer to union/structure.",
    "NOSUP_DAT_ARG": "Non pointer structure/union argument is not supported.",
    "BAD_HYPHEN": "Failed to parse single hyphen. Forgot '>'?",
    "NO_BTF_FIELD": "This field is not found.",
    "BAD_BTF_TID": "Failed to get BTF type info.",
    "BAD_TYPE4STR": "This type does not fit for string.",
    "NEED_STRING_TYPE": "$comm and immediate-string only accepts string type",
    "EVENT_TOO_BIG": "Event too big (too many fields?)",
}
"""Linux 6.12's ``ERRORS`` list of ``kernel/trace/trace_probe.h``, in its order."""

RESERVED_FIELD_NAMES = (
    "common_type", "common_flags", "common_preempt_count", "common_pid", "common_tgid",
    "__probe_ip", "__probe_ret_ip", "__probe_func",
)  # fmt: skip


class DefinitionError(InvalidProbeDefinition):
    """A definition the kernel refuses.

    ``code`` is the kernel's error name (a key of :data:`ERRORS`), or ``None`` for a refusal
    the kernel reports only by the write's error number (``errno_text``).  ``command`` is
    the command as the kernel logs it (arguments joined by one space) and ``position`` the
    column of the caret."""

    def __init__(self, subsystem: str, code: str | None, command: str, position: int | None,
                 errno_text: str = "", detail: str = "") -> None:
        self.subsystem, self.code, self.command = subsystem, code, command
        self.position, self.errno_text, self.detail = position, errno_text, detail
        text = ERRORS[code] if code is not None else errno_text
        where = f" at column {position}" if position is not None else ""
        extra = f" ({detail})" if detail else ""
        super().__init__(f"{subsystem}: error: {text}{extra}: {command!r}{where}")

    @property
    def text(self) -> str:
        """The kernel's error text."""
        return ERRORS[self.code] if self.code is not None else self.errno_text

    def error_log(self) -> str:
        """The error as tracefs ``error_log`` shows it: the error, the command, a caret."""
        if self.code is None:
            return f"{self.subsystem}: error: {self.errno_text}\n  Command: {self.command}\n"
        caret = " " * (len("  Command: ") + (self.position or 0)) + "^"
        return (f"[    0.000000] {self.subsystem}: error: {self.text}\n"
                f"  Command: {self.command}\n{caret}\n")


# -- fetch programs ---------------------------------------------------------------------------


class Op(enum.Enum):
    """A fetch instruction (``enum fetch_op``)."""

    NOP = "nop"
    REG = "reg"
    STACK = "stack"
    STACKP = "stackp"
    RETVAL = "retval"
    IMM = "imm"
    COMM = "comm"
    ARG = "arg"
    FOFFS = "foffs"
    DATA = "data"
    EDATA = "edata"
    DEREF = "deref"
    UDEREF = "uderef"
    ST_RAW = "st_raw"
    ST_MEM = "st_mem"
    ST_UMEM = "st_umem"
    ST_STRING = "st_string"
    ST_USTRING = "st_ustring"
    ST_SYMSTR = "st_symstr"
    MOD_BF = "mod_bf"
    LP_ARRAY = "lp_array"
    END = "end"
    SYMBOL = "symbol"
    """``FETCH_NOP_SYMBOL``: the name of ``@SYM``, resolved when the probe is registered."""


@dataclass
class Insn:
    """One fetch instruction (``struct fetch_insn``)."""

    op: Op = Op.NOP
    param: int = 0
    offset: int = 0
    imm: int = 0
    data: str = ""
    size: int = 0
    lshift: int = 0
    rshift: int = 0
    basesize: int = 0
    reg: str = ""
    """The ``PtRegs`` field of :attr:`Op.REG`."""


@dataclass(frozen=True)
class FetchType:
    """A fetch type (``struct fetch_type``)."""

    name: str
    size: int
    signed: bool = False
    string: bool = False
    fmt: str = "u"
    """How values print: ``u`` unsigned decimal, ``d`` signed, ``x`` 0x-hex, ``c`` char,
    ``S`` symbol, ``s`` string."""


_TYPES: dict[str, FetchType] = {
    t.name: t
    for t in (
        FetchType("string", 4, string=True, fmt="s"),
        FetchType("ustring", 4, string=True, fmt="s"),
        FetchType("symstr", 4, string=True, fmt="s"),
        *(FetchType(f"u{b}", b // 8) for b in (8, 16, 32, 64)),
        *(FetchType(f"s{b}", b // 8, signed=True, fmt="d") for b in (8, 16, 32, 64)),
        *(FetchType(f"x{b}", b // 8, fmt="x") for b in (8, 16, 32, 64)),
        FetchType("char", 1, fmt="c"),
        FetchType("symbol", 8, fmt="S"),
    )
}


def find_fetch_type(name: str | None, user: bool) -> FetchType | None:
    """``find_fetch_type``: the type called ``name`` (``x64`` when ``None``); a bitfield
    ``b<width>@<offset>/<size>`` is stored as ``u<size>``; uprobes have no symbols."""
    if name is not None and user and name in ("symbol", "symstr"):
        return None
    if name is None:
        name = "x64"
    if name.startswith("b"):
        slash = name.find("/")
        if slash < 0:
            return None
        size = kstrtoul(name[slash + 1:])
        return find_fetch_type(f"u{size}", user) if size in (8, 16, 32, 64) else None
    return _TYPES.get(name)


@dataclass
class ProbeArg:
    """One fetch argument: its name, text, type and fetch program."""

    name: str
    comm: str
    type: FetchType
    count: int = 0
    code: list[Insn] = field(default_factory=list)
    bitfield: str | None = None


@dataclass
class ProbeDefinition:
    """A parsed probe event."""

    command: str
    argv: list[str]
    user: bool
    is_return: bool
    group: str
    event: str
    args: list[ProbeArg]
    symbol: str | None = None
    offset: int = 0
    address: int | None = None
    maxactive: int = 0
    path: str | None = None
    file_offset: int = 0
    ref_ctr_offset: int = 0
    fentry: bool = False

    @property
    def subsystem(self) -> str:
        """``trace_kprobe`` or ``trace_uprobe``: where its errors are logged."""
        return "trace_uprobe" if self.user else "trace_kprobe"

    @property
    def uses_entry_args(self) -> bool:
        """Whether a return probe fetches ``$argN`` saved at function entry."""
        return any(i.op is Op.EDATA for a in self.args for i in a.code)


@dataclass
class Deletion:
    """A ``-:[GRP/][EVENT] [ARGS]`` command."""

    command: str
    group: str | None
    event: str
    args: list[str]


class SymbolCounter:
    """What the parser asks kallsyms: how many symbols have a name, and whether a symbol
    plus offset is a function entry.  The default knows no symbols."""

    def count(self, name: str) -> int:
        """The number of symbols called ``name``."""
        return 0

    def is_function_entry(self, name: str, offset: int) -> bool:
        """Whether ``name + offset`` is the entry of a function."""
        return offset == 0


# -- the log ----------------------------------------------------------------------------------


class ProbeLog:
    """``trace_probe_log``: the command's arguments and the one being parsed; ``err``
    makes the error with the caret where the kernel puts it."""

    def __init__(self, subsystem: str, argv: list[str]) -> None:
        self.subsystem, self.argv, self.index = subsystem, argv, 0

    @property
    def command(self) -> str:
        return " ".join(self.argv)

    def err(self, offset: int, code: str) -> DefinitionError:
        pos = sum(len(a) + 1 for a in self.argv[: self.index])
        if self.index >= len(self.argv):
            pos, offset = len(self.command) + 1, 0
        return DefinitionError(self.subsystem, code, self.command, pos + offset)


def _generic(argv: list[str], errno_text: str, detail: str) -> DefinitionError:
    return DefinitionError("dynamic_events", None, " ".join(argv), None, errno_text, detail)


def _good_name(name: str, hash_ok: bool = False) -> bool:
    """``__is_good_name``: a C identifier (``-`` also allowed in a group name)."""
    if not name:
        return False
    ok_first = name[0].isascii() and (name[0].isalpha() or name[0] == "_")
    if not ok_first and not (hash_ok and name[0] == "-"):
        return False
    return all(c.isascii() and (c.isalnum() or c == "_" or (hash_ok and c == "-"))
               for c in name[1:])


def _parse_event_name(log: ProbeLog, text: str, offset: int, group: str
                      ) -> tuple[str | None, str]:
    """``traceprobe_parse_event_name``: ``(event or None, group)``."""
    slash = text.find("/")
    if slash < 0:
        slash = text.find(".")
    if slash >= 0:
        if slash == 0:
            raise log.err(offset, "NO_GROUP_NAME")
        if slash + 1 > MAX_EVENT_NAME_LEN:
            raise log.err(offset, "GROUP_TOO_LONG")
        if not _good_name(text[:slash], hash_ok=True):
            raise log.err(offset, "BAD_GROUP_NAME")
        group, offset, text = text[:slash], offset + slash + 1, text[slash + 1:]
    if not text:
        if slash >= 0:
            return None, group
        raise log.err(offset, "NO_EVENT_NAME")
    if len(text) >= MAX_EVENT_NAME_LEN:
        raise log.err(offset, "EVENT_TOO_LONG")
    if not _good_name(text):
        raise log.err(offset, "BAD_EVENT_NAME")
    return text, group


def _sanitize(name: str) -> str:
    """``sanitize_event_name`` (the first character is kept) and the 63-byte limit."""
    name = name[: MAX_EVENT_NAME_LEN - 1]
    return name[:1] + "".join("_" if c in ":.*" else c for c in name[1:])


# -- the argument parser ----------------------------------------------------------------------

_KERNEL, _RETURN, _FENTRY, _USER = 1, 2, 4, 8


@dataclass
class _Ctx:
    flags: int
    isa: str
    offset: int = 0

    def entry(self) -> bool:
        return self.flags & (_KERNEL | _FENTRY | _RETURN | _USER) == _KERNEL | _FENTRY

    def exit(self) -> bool:
        return self.flags & (_KERNEL | _FENTRY | _RETURN | _USER) == _KERNEL | _RETURN


class _Code:
    """The fixed fetch-instruction array and the cursor into it."""

    def __init__(self) -> None:
        self.insns = [Insn() for _ in range(FETCH_INSN_MAX)]
        self.insns[-1].op = Op.END
        self.i = 0

    @property
    def cur(self) -> Insn:
        return self.insns[self.i]

    def advance(self, log: ProbeLog, ctx: _Ctx) -> None:
        """``if (++code == end) TOO_MANY_OPS``."""
        self.i += 1
        if self.i == FETCH_INSN_MAX - 1:
            raise log.err(ctx.offset, "TOO_MANY_OPS")


def _parse_vars(log: ProbeLog, arg: str, code: _Code, ctx: _Ctx) -> None:
    """``parse_probe_vars``: ``$retval``, ``$stack``, ``$stackN``, ``$comm``, ``$argN``."""
    var, c = arg[1:], code.cur
    if var.startswith("retval"):
        if not ctx.flags & _RETURN:
            raise log.err(ctx.offset, "RETVAL_ON_PROBE")
        c.op = Op.RETVAL
        return
    if var.startswith("stack"):
        rest = var[5:]
        if rest == "":
            c.op = Op.STACKP
            return
        if rest[0].isdigit():
            n = kstrtoul(rest, 10)
            if n is None:
                raise log.err(ctx.offset, "BAD_VAR")
            if ctx.flags & _KERNEL and n > PARAM_MAX_STACK:
                raise log.err(ctx.offset, "BAD_STACK_NUM")
            c.op, c.param = Op.STACK, n
            return
        raise log.err(ctx.offset, "BAD_VAR")
    if var in ("comm", "COMM"):
        c.op = Op.COMM
        return
    if var.startswith("arg"):
        n = kstrtoul(var[3:], 10)
        if n is None:
            raise log.err(ctx.offset, "BAD_VAR")
        if n == 0 or n > PARAM_MAX_STACK:
            raise log.err(ctx.offset, "BAD_ARG_NUM")
        if ctx.entry():
            c.op, c.param = Op.ARG, n - 1
        elif ctx.exit():
            c.op, c.param = Op.EDATA, n - 1
        else:
            raise log.err(ctx.offset, "NOFENTRY_ARGS")
        return
    raise log.err(ctx.offset, "BAD_VAR")


def _parse_mem(log: ProbeLog, arg: str, code: _Code, ctx: _Ctx) -> None:
    """``@ADDR``, ``@+FILE_OFFSET`` (uprobes), ``@SYM[+|-offs]`` (kprobes)."""
    c = code.cur
    if arg[1:2].isdigit():
        addr = kstrtoul(arg[1:])
        if addr is None:
            raise log.err(ctx.offset, "BAD_MEM_ADDR")
        c.op, c.imm = Op.IMM, addr
    elif arg[1:2] == "+":
        if ctx.flags & _KERNEL:
            raise log.err(ctx.offset, "FILE_ON_KPROBE")
        offs = kstrtol(arg[2:])
        if offs is None:
            raise log.err(ctx.offset, "BAD_FILE_OFFS")
        c.op, c.imm = Op.FOFFS, offs & ((1 << 64) - 1)
    else:
        if not ctx.flags & _KERNEL:
            raise log.err(ctx.offset, "SYM_ON_UPROBE")
        c.op, c.data = Op.SYMBOL, arg[1:]
        code.advance(log, ctx)
        code.cur.op = Op.IMM
    code.advance(log, ctx)
    code.cur.op, code.cur.offset = Op.DEREF, 0


def _parse_deref(log: ProbeLog, arg: str, code: _Code, ctx: _Ctx) -> None:
    """``+|-[u]OFFS(FETCHARG)``, with the kernel's column arithmetic: the ``u`` is
    overwritten by the sign rather than skipped, so the inner argument's column is one
    short after ``+u`` and ``-u``, as in ``error_log``."""
    op, s, p = Op.DEREF, arg, 0
    if arg[1:2] == "u":
        op, s, p = Op.UDEREF, arg[0] + arg[0] + arg[2:], 1
    if s[p] == "+":
        p += 1
    brace = s.find("(", p)
    if brace < 0:
        raise log.err(ctx.offset, "DEREF_NEED_BRACE")
    offset = kstrtol(s[p:brace])
    if offset is None:
        raise log.err(ctx.offset, "BAD_DEREF_OFFS")
    ctx.offset += (brace + 1 - p) + (1 if s[p] != "-" else 0)
    inner = s[brace + 1:]
    close = inner.rfind(")")
    if close < 0:
        raise log.err(ctx.offset + len(inner), "DEREF_OPEN_BRACE")
    cur = ctx.offset
    _parse_arg(log, inner[:close], code, ctx)
    ctx.offset = cur
    if code.cur.op in (Op.COMM, Op.DATA):
        raise log.err(ctx.offset, "COMM_CANT_DEREF")
    code.advance(log, ctx)
    code.cur.op, code.cur.offset = op, offset


def _parse_imm(log: ProbeLog, arg: str, code: _Code, ctx: _Ctx) -> None:
    """``\\IMM`` and the immediate string ``\\"TEXT"``."""
    c = code.cur
    if arg[1:2] == '"':
        text = arg[2:]
        if not text or text[-1] != '"':
            raise log.err(ctx.offset + 2 + len(text), "IMMSTR_NO_CLOSE")
        c.op, c.data = Op.DATA, text[:-1]
        return
    s = arg[1:]
    value: int | None
    if s[:1].isdigit():
        value = kstrtoul(s)
    elif s[:1] == "-":
        value = kstrtol(s)
    elif s[:1] == "+":
        value = kstrtol(s[1:])
    else:
        value = None
    if value is None:
        raise log.err(ctx.offset + 1, "BAD_IMM")
    c.op, c.imm = Op.IMM, value & ((1 << 64) - 1)


def _parse_arg(log: ProbeLog, arg: str, code: _Code, ctx: _Ctx) -> None:
    """``parse_probe_arg``: the recursive fetch-argument parser."""
    first = arg[:1]
    if first == "$":
        _parse_vars(log, arg, code, ctx)
    elif first == "%":
        reg = register_field(ctx.isa, arg[1:])
        if reg is None:
            raise log.err(ctx.offset, "BAD_REG_NAME")
        code.cur.op, code.cur.reg = Op.REG, reg
    elif first == "@":
        _parse_mem(log, arg, code, ctx)
    elif first in ("+", "-"):
        _parse_deref(log, arg, code, ctx)
    elif first == "\\":
        _parse_imm(log, arg, code, ctx)
    elif first.isascii() and (first.isalpha() or first == "_"):
        raise log.err(ctx.offset, "NOSUP_BTFARG")
    if code.cur.op is Op.NOP:
        raise log.err(ctx.offset, "BAD_FETCH_ARG")


def _parse_type(log: ProbeLog, body: str, parg: ProbeArg, ctx: _Ctx, user: bool
                ) -> tuple[str, str | None, int]:
    """``parse_probe_arg_type``: split ``FETCHARG:TYPE[N]``; returns the fetch text, the
    type text and its column in the body."""
    colon = body.find(":")
    type_text: str | None = None
    if colon >= 0:
        type_text = body[colon + 1:]
        bracket = type_text.find("[")
        if bracket >= 0:
            count_text = type_text[bracket + 1:]
            count_col = colon + 1 + bracket + 1
            close = count_text.find("]")
            if close < 0:
                raise log.err(ctx.offset + count_col + len(count_text), "ARRAY_NO_CLOSE")
            if count_text[close + 1:] != "":
                raise log.err(ctx.offset + count_col + close + 1, "BAD_ARRAY_SUFFIX")
            count = kstrtouint(count_text[:close])
            if not count:
                raise log.err(ctx.offset + count_col, "BAD_ARRAY_NUM")
            if count > MAX_ARRAY_LEN:
                raise log.err(ctx.offset + count_col, "ARRAY_TOO_BIG")
            parg.count, type_text = count, type_text[:bracket]
        arg = body[:colon]
    else:
        arg = body
    offs = colon + 1 if colon >= 0 else 0
    found: FetchType | None
    if arg in ("$comm", "$COMM") or arg.startswith('\\"'):
        if parg.count or (type_text is not None and type_text != "string"):
            raise log.err(ctx.offset + offs, "NEED_STRING_TYPE")
        found = find_fetch_type("string", user)
    else:
        found = find_fetch_type(type_text, user)
    if found is None:
        raise log.err(ctx.offset + offs, "BAD_TYPE")
    parg.type = found
    return arg, type_text, offs


_SYMSTR_OPS = (Op.REG, Op.STACK, Op.RETVAL, Op.ARG, Op.DEREF)
_STRING_OPS = (Op.DEREF, Op.UDEREF, Op.IMM, Op.COMM, Op.DATA)


def _next_free(log: ProbeLog, code: _Code, ctx: _Ctx) -> None:
    code.i += 1
    if code.cur.op is not Op.NOP:
        raise log.err(ctx.offset, "TOO_MANY_OPS")


def _finalize(log: ProbeLog, code: _Code, parg: ProbeArg, type_text: str | None,
              type_offset: int, ctx: _Ctx) -> None:
    """``finalize_fetch_insn``: add the store, bitfield and array instructions."""
    t, c = parg.type, code.cur
    if t.string:
        if t.name == "symstr" and c.op not in _SYMSTR_OPS:
            raise log.err(ctx.offset + type_offset, "BAD_SYMSTRING")
        if t.name != "symstr" and c.op not in _STRING_OPS:
            raise log.err(ctx.offset + type_offset, "BAD_STRING")
        if t.name == "symstr" or c.op in (Op.IMM, Op.COMM, Op.DATA) or parg.count:
            _next_free(log, code, ctx)
        c = code.cur
        if t.name == "ustring" or c.op is Op.UDEREF:
            c.op = Op.ST_USTRING
        elif t.name == "symstr":
            c.op = Op.ST_SYMSTR
        else:
            c.op = Op.ST_STRING
        c.size = t.size
    elif c.op is Op.DEREF:
        c.op, c.size = Op.ST_MEM, t.size
    elif c.op is Op.UDEREF:
        c.op, c.size = Op.ST_UMEM, t.size
    else:
        _next_free(log, code, ctx)
        code.cur.op, code.cur.size = Op.ST_RAW, t.size
    store = code.cur
    if type_text is not None and type_text.startswith("b"):
        _bitfield(log, code, type_text, t, ctx, type_offset)
        parg.bitfield = type_text
    if parg.count:
        if store.op not in (Op.ST_MEM, Op.ST_STRING, Op.ST_USTRING):
            raise log.err(ctx.offset + type_offset, "BAD_STRING")
        _next_free(log, code, ctx)
        code.cur.op, code.cur.param = Op.LP_ARRAY, parg.count
    code.i += 1
    code.cur.op = Op.END


def _bitfield(log: ProbeLog, code: _Code, bf: str, t: FetchType, ctx: _Ctx, col: int) -> None:
    """``__parse_bitfield_probe_arg``: ``b<width>@<offset>/<size>``."""
    width, tail = simple_strtoul(bf[1:])
    ok = width != 0 and tail[:1] == "@"
    if ok:
        start, tail2 = simple_strtoul(tail[1:])
        ok = tail2 != tail[1:] and tail2[:1] == "/"
    if ok:
        code.i += 1
        ok = code.cur.op is Op.NOP
    bits = t.size * 8
    if not ok or bits < width + start:
        raise log.err(ctx.offset + col, "BAD_BITFIELD")
    c = code.cur
    c.op, c.lshift, c.rshift, c.basesize = Op.MOD_BF, bits - (width + start), bits - width, t.size


def _parse_probe_arg(log: ProbeLog, args: list[ProbeArg], i: int, text: str, ctx: _Ctx,
                     user: bool, size: list[int]) -> ProbeArg:
    """``traceprobe_parse_probe_arg``: ``[NAME=]FETCHARG[:TYPE]``."""
    eq = text.find("=")
    if eq >= 0:
        if eq > MAX_ARG_NAME_LEN:
            raise log.err(0, "ARG_NAME_TOO_LONG")
        if eq == 0:
            raise log.err(0, "NO_ARG_NAME")
        name, body = text[:eq], text[eq + 1:]
    else:
        name, body = f"arg{i + 1}", text
    if not _good_name(name):
        raise log.err(0, "BAD_ARG_NAME")
    if name in RESERVED_FIELD_NAMES or any(a.name == name for a in args):
        raise log.err(0, "USED_ARG_NAME")
    ctx.offset = eq + 1 if eq >= 0 else 0
    if len(body) > MAX_ARGSTR_LEN:
        raise log.err(ctx.offset, "ARG_TOO_LONG")
    if not body:
        raise log.err(ctx.offset, "NO_ARG_BODY")
    parg = ProbeArg(name, body, _TYPES["x64"])
    arg, type_text, type_offset = _parse_type(log, body, parg, ctx, user)
    code = _Code()
    _parse_arg(log, arg, code, ctx)
    size[0] += parg.type.size * (parg.count or 1)
    if size[0] > MAX_PROBE_EVENT_SIZE:
        raise log.err(ctx.offset, "EVENT_TOO_BIG")
    _finalize(log, code, parg, type_text, type_offset if type_text is not None else 0, ctx)
    parg.code = code.insns[: code.i + 1]
    return parg


def _parse_args(log: ProbeLog, argv: list[str], ctx: _Ctx, user: bool) -> list[ProbeArg]:
    args: list[ProbeArg] = []
    size = [0]
    for i, text in enumerate(argv[2:]):
        log.index = i + 2
        ctx.offset = 0
        args.append(_parse_probe_arg(log, args, i, text, ctx, user, size))
    return args


def _check_var_args(log: ProbeLog, argv: list[str], ctx: _Ctx) -> None:
    """``argv_has_var_arg`` and the BTF expansion of ``$arg*`` (not supported)."""
    star = -1
    for i, text in enumerate(argv[2:]):
        if not text.startswith("$arg"):
            continue
        log.index = i + 2
        if not ctx.entry() and not ctx.exit():
            raise log.err(0, "NOFENTRY_ARGS")
        if text[4:5].isdigit():
            continue
        if text[4:5] != "*":
            raise log.err(0, "BAD_VAR")
        if star >= 0:
            raise log.err(0, "DOUBLE_ARGS")
        star = i
    if star >= 0:
        raise log.err(0, "NOSUP_BTFARG")


# -- the two commands -------------------------------------------------------------------------


def _maxactive(log: ProbeLog, head: str, event_at: int | None, is_return: bool) -> int:
    if not head[1:2].isdigit():
        return 0
    if not is_return:
        raise log.err(1, "BAD_MAXACT_TYPE")
    text = head[1: event_at - 1] if event_at is not None else head[1:]
    if len(text) > MAX_EVENT_NAME_LEN - 1:
        raise log.err(1, "BAD_MAXACT")
    n = kstrtouint(text)
    if not n:
        raise log.err(1, "BAD_MAXACT")
    if n > KRETPROBE_MAXACTIVE_MAX:
        raise log.err(1, "MAXACT_TOO_BIG")
    return n


def _kprobe_symbol(log: ProbeLog, text: str, symbols: SymbolCounter, is_return: bool
                   ) -> tuple[str, int, bool]:
    """The ``[MOD:]SYM[+offs][%return]`` of a kprobe: ``(symbol, offset, is_return)``."""
    pct = text.find("%")
    if pct >= 0:
        if text[pct:] != "%return":
            raise log.err(pct, "BAD_ADDR_SUFFIX")
        text, is_return = text[:pct], True
    sign = min((p for p in (text.find("+"), text.find("-")) if p >= 0), default=-1)
    offset: int | None = 0
    if sign >= 0:
        offset = kstrtol(text[sign:])
        text = text[:sign]
    if offset is None or offset < 0 or offset > UINT_MAX:
        raise log.err(0, "BAD_PROBE_ADDR")
    name = text.split(":", 1)[1] if ":" in text else text
    n = symbols.count(name) if ":" not in text else 0
    if n > 1:
        raise log.err(0, "NON_UNIQ_SYMBOL")
    if n == 0:
        raise log.err(0, "BAD_PROBE_ADDR")
    if is_return and not symbols.is_function_entry(name, offset):
        raise log.err(0, "BAD_RETPROBE")
    return text, offset, is_return


def _parse_kprobe(argv: list[str], isa: str, symbols: SymbolCounter) -> ProbeDefinition:
    head, is_return = argv[0], argv[0][0] == "r"
    log = ProbeLog("trace_kprobe", argv)
    colon = head.find(":", 1)
    event_at = colon + 1 if colon >= 0 else None
    maxactive = _maxactive(log, head, event_at, is_return)
    address = kstrtoul(argv[1])
    symbol, offset = None, 0
    flags = _KERNEL
    if address is None:
        log.index = 1
        symbol, offset, is_return = _kprobe_symbol(log, argv[1], symbols, is_return)
        if is_return:
            flags |= _RETURN
        elif symbols.is_function_entry(symbol.split(":")[-1], offset):
            flags |= _FENTRY
    log.index = 0
    group, event = "kprobes", None
    if event_at is not None:
        event, group = _parse_event_name(log, head[event_at:], event_at, group)
    if event is None:
        kind = "r" if is_return else "p"
        event = _sanitize(f"{kind}_{symbol}_{offset}" if symbol is not None
                          else f"{kind}_0x{address:016x}")
    ctx = _Ctx(flags, isa)
    _check_var_args(log, argv, ctx)
    if len(argv) - 2 > MAX_TRACE_ARGS:
        raise _generic(argv, "Argument list too long", f"more than {MAX_TRACE_ARGS} arguments")
    args = _parse_args(log, argv, ctx, user=False)
    return ProbeDefinition(" ".join(argv), argv, False, is_return, group, event, args,
                           symbol=symbol, offset=offset, address=address,
                           maxactive=maxactive, fentry=bool(flags & _FENTRY))


def _parse_uprobe(argv: list[str], isa: str) -> ProbeDefinition:
    head, is_return = argv[0], argv[0][0] == "r"
    if len(argv) - 2 > MAX_TRACE_ARGS:
        raise _generic(argv, "Argument list too long", f"more than {MAX_TRACE_ARGS} arguments")
    event_text = head[2:] if head[1:2] == ":" else None
    spec = argv[1]
    colon = spec.rfind(":")
    log = ProbeLog("trace_uprobe", argv)
    log.index = 1
    path, rest = spec[:colon], spec[colon + 1:]
    if not os.path.exists(path):
        raise log.err(0, "FILE_NOT_FOUND")
    if not os.path.isfile(path):
        raise log.err(0, "NO_REGULAR_FILE")
    base = colon + 1
    ref_ctr = 0
    if "(" in rest:
        rest, ref_ctr = _refcount(log, rest, base)
    pct = rest.find("%")
    if pct >= 0:
        if rest[pct:] != "%return":
            raise log.err(base + pct, "BAD_ADDR_SUFFIX")
        rest, is_return = rest[:pct], True
    offset = kstrtoul(rest)
    if offset is None:
        raise log.err(base, "BAD_UPROBE_OFFS")
    log.index = 0
    group, event = "uprobes", None
    if event_text is not None:
        event, group = _parse_event_name(log, event_text, 2, group)
    if event is None:
        tail = os.path.basename(path)
        cut = min((p for p in (tail.find("."), tail.find("-"), tail.find("_")) if p >= 0),
                  default=len(tail))
        event = f"p_{tail[:cut]}_0x{offset:x}"[: MAX_EVENT_NAME_LEN - 1]
    ctx = _Ctx(_USER | (_RETURN if is_return else 0), isa)
    args = _parse_args(log, argv, ctx, user=True)
    return ProbeDefinition(" ".join(argv), argv, True, is_return, group, event, args,
                           path=path, file_offset=offset, ref_ctr_offset=ref_ctr)


def _refcount(log: ProbeLog, rest: str, base: int) -> tuple[str, int]:
    """``OFFSET(REF_CTR_OFFSET)``: the file offset of an SDT semaphore (a ``u16`` the
    kernel increments in each process while the probe is installed)."""
    open_at = rest.find("(")
    close = rest.find(")", open_at)
    if close < 0:
        raise log.err(base + len(rest), "REFCNT_OPEN_BRACE")
    if rest[close + 1:] != "":
        raise log.err(base + close + 1, "BAD_REFCNT_SUFFIX")
    value = kstrtoul(rest[open_at + 1: close])
    if value is None:
        raise log.err(base + open_at + 1, "BAD_REFCNT")
    return rest[:open_at], value


def _parse_deletion(argv: list[str]) -> Deletion:
    head = argv[0]
    if head[1:2] != ":":
        raise _generic(argv, "Invalid argument", "a deletion is written -:[GRP/]EVENT")
    event, group = head[2:], None
    if "/" in event:
        group, event = event.split("/", 1)
    if group is None and not event:
        raise _generic(argv, "Invalid argument", "-: needs an event name")
    return Deletion(" ".join(argv), group, event, argv[1:])


def parse(text: str, isa: str, symbols: SymbolCounter | None = None
          ) -> ProbeDefinition | Deletion:
    """Parse one ``kprobe_events``/``uprobe_events`` command as Linux 6.12 does.

    Raises :class:`DefinitionError` for a command the kernel refuses."""
    argv = text.split()
    if not argv:
        raise _generic(argv, "Invalid argument", "empty definition")
    if argv[0].startswith("-"):
        return _parse_deletion(argv)
    if argv[0][0] not in "pr" or len(argv) < 2:
        raise _generic(argv, "Invalid argument",
                       "a definition is p|r[:[GRP/]EVENT] PLACE [FETCHARGS]")
    if "/" in argv[1] and ":" in argv[1]:
        colon = argv[1].rfind(":")
        if not argv[1][colon + 1: colon + 2].isdigit():
            raise _generic(argv, "Invalid argument", "a uprobe is PATH:OFFSET")
        _maxactive(ProbeLog("trace_kprobe", argv), argv[0], None, argv[0][0] == "r")
        return _parse_uprobe(argv, isa)
    return _parse_kprobe(argv, isa, symbols or SymbolCounter())

