"""The probe-event grammar: every error of Linux 6.12's ``trace_probe.h`` ERRORS list that a
``kprobe_events``/``uprobe_events`` command can raise, with the kernel's text and the column
``error_log`` puts the caret at; ``docs/trace.md`` accounts for every entry of the list."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kprobe_ref.sim import Machine
from kprobe_ref.tools.trace.grammar import (
    ERRORS,
    DefinitionError,
    Deletion,
    Op,
    ProbeDefinition,
    SymbolCounter,
    parse,
)
from kprobe_ref.tools.trace.numbers import kstrtol, kstrtoul, simple_strtoul
from kprobe_ref.tools.trace.session import KernelSymbols, TraceSession
from kprobe_ref.tools.verify import bundled_image

ROOT = Path(__file__).resolve().parents[1]
USER = str(bundled_image("x86_64", "user"))
U = len(USER)


@pytest.fixture(scope="module")
def symbols() -> KernelSymbols:
    from kprobe_ref.sim.elf import read_image

    return KernelSymbols([read_image(bundled_image("x86_64"), "x86_64")])


# (error, definition, caret column).  Columns are worked out from the kernel's code: the
# argument's start plus the offset the parser logs (see docs/trace.md).
PARSE_CASES: list[tuple[str, str, int]] = [
    ("FILE_NOT_FOUND", "p /no/such/file:0x10", 2),
    ("NO_REGULAR_FILE", "p /tmp:0x10", 2),
    ("BAD_REFCNT", f"p {USER}:0x1000(zz)", 2 + U + 8),
    ("REFCNT_OPEN_BRACE", f"p {USER}:0x1000(0x10", 2 + U + 12),
    ("BAD_REFCNT_SUFFIX", f"p {USER}:0x1000(0x10)x", 2 + U + 13),
    ("BAD_UPROBE_OFFS", f"p {USER}:1zz", 2 + U + 1),
    ("BAD_MAXACT_TYPE", "p5 gcd", 1),
    ("BAD_MAXACT", "r0 gcd", 1),
    ("MAXACT_TOO_BIG", "r4097 gcd", 1),
    ("BAD_PROBE_ADDR", "p no_such_function", 2),
    ("BAD_PROBE_ADDR", "p gcd-4", 2),
    ("BAD_RETPROBE", "r gcd+4", 2),
    ("BAD_RETPROBE", "p gcd+4%return", 2),
    ("BAD_ADDR_SUFFIX", "p gcd%ret", 5),
    ("BAD_ADDR_SUFFIX", f"p {USER}:0x10%entry", 2 + U + 5),
    ("NO_GROUP_NAME", "p:/ev gcd", 2),
    ("GROUP_TOO_LONG", "p:" + "g" * 64 + "/ev gcd", 2),
    ("BAD_GROUP_NAME", "p:1g/ev gcd", 2),
    ("NO_EVENT_NAME", "p: gcd", 2),
    ("EVENT_TOO_LONG", "p:" + "e" * 64 + " gcd", 2),
    ("BAD_EVENT_NAME", "p:my-ev gcd", 2),
    ("BAD_EVENT_NAME", "p:grp/1ev gcd", 6),
    ("RETVAL_ON_PROBE", "p gcd $retval", 6),
    ("BAD_STACK_NUM", "p gcd $stack2049", 6),
    ("BAD_ARG_NUM", "p gcd x=$arg0", 8),
    ("BAD_VAR", "p gcd x=$foo", 8),
    ("BAD_VAR", "p gcd $stackx", 6),
    ("BAD_VAR", "p gcd $args", 6),
    ("BAD_REG_NAME", "p:myprobe gcd dfd=%rax", 18),
    ("BAD_REG_NAME", "p gcd %eax", 6),
    ("BAD_MEM_ADDR", "p gcd @0xzz", 6),
    ("BAD_IMM", "p gcd \\zz", 7),
    ("IMMSTR_NO_CLOSE", 'p gcd x=\\"abc:string', 13),
    ("FILE_ON_KPROBE", "p gcd @+0x10", 6),
    ("BAD_FILE_OFFS", f"p {USER}:0x1000 @+zz", 2 + U + 8),
    ("SYM_ON_UPROBE", f"p {USER}:0x1000 @gcd", 2 + U + 8),
    ("TOO_MANY_OPS", "p gcd " + "+0(" * 15 + "%ax" + ")" * 15, 9),
    ("DEREF_NEED_BRACE", "p gcd +8%ax", 6),
    ("BAD_DEREF_OFFS", "p gcd +zz(%ax)", 6),
    ("DEREF_OPEN_BRACE", "p gcd +8(%ax", 12),
    ("BAD_REG_NAME", "p gcd +8(%rax)", 9),
    ("BAD_REG_NAME", "p gcd +u8(%rax)", 9),  # the kernel's column is one short after +u
    ("BAD_REG_NAME", "p gcd -8(%rax)", 9),
    ("COMM_CANT_DEREF", "p gcd +0($comm)", 9),
    ("COMM_CANT_DEREF", 'p gcd +0(\\"s")', 9),
    ("BAD_FETCH_ARG", "p gcd 123", 6),
    ("ARRAY_NO_CLOSE", "p gcd +0(%ax):u8[4", 18),
    ("BAD_ARRAY_SUFFIX", "p gcd +0(%ax):u8[4]x", 19),
    ("BAD_ARRAY_NUM", "p gcd +0(%ax):u8[0]", 17),
    ("ARRAY_TOO_BIG", "p gcd +0(%ax):u8[65]", 17),
    ("BAD_TYPE", "p gcd %ax:u128", 10),
    ("BAD_TYPE", f"p {USER}:0x1000 %ax:symbol", 2 + U + 12),
    ("BAD_STRING", "p gcd %ax:string", 10),
    ("BAD_STRING", "p gcd %ax:u8[2]", 10),
    ("BAD_SYMSTRING", "p gcd $stack:symstr", 13),
    ("BAD_BITFIELD", "p gcd %ax:b9@0/8", 10),
    ("BAD_BITFIELD", "p gcd %ax:b4/8", 10),
    ("ARG_NAME_TOO_LONG", "p gcd " + "n" * 33 + "=%ax", 6),
    ("NO_ARG_NAME", "p gcd =%ax", 6),
    ("BAD_ARG_NAME", "p gcd 1x=%ax", 6),
    ("USED_ARG_NAME", "p gcd x=%ax x=%bx", 12),
    ("USED_ARG_NAME", "p gcd common_pid=%ax", 6),
    ("ARG_TOO_LONG", "p gcd x=+" + "0" * 60 + "(%ax)", 8),
    ("NO_ARG_BODY", "p gcd x=", 8),
    ("NOSUP_BTFARG", "p gcd foo", 6),
    ("NOSUP_BTFARG", "p gcd $arg*", 6),
    ("NOFENTRY_ARGS", "p gcd+4 $arg1", 8),
    ("NOFENTRY_ARGS", f"p {USER}:0x1000 x=$arg1", 2 + U + 10),
    ("DOUBLE_ARGS", "p gcd $arg* $arg*", 12),
    ("NEED_STRING_TYPE", "p gcd $comm:u32", 12),
    ("EVENT_TOO_BIG", "p gcd " + " ".join(f"a{i}=+0(%ax):u64[64]" for i in range(7)), 126),
]

# Errors raised when the probe is registered (they need the machine and the events).
REGISTER_CASES: list[tuple[str, list[str], int]] = [
    ("EVENT_EXIST", [f"p:uprobes/ev {USER}:0x1000", "p:uprobes/ev gcd"], 0),
    ("DIFF_PROBE_TYPE", ["p:ev gcd", "r:ev gcd"], 0),
    ("DIFF_ARG_TYPE", ["p:ev gcd a=%di", "p:ev gcd a=%di:u32"], 9),
    ("DIFF_ARG_TYPE", ["p:ev gcd a=%di", "p:ev factorial"], 15),
    ("SAME_PROBE", ["p:ev gcd a=%di", "p:ev gcd a=%di"], 0),
    ("BAD_INSN_BNDRY", ["p gcd+2"], 2),
    ("FAIL_REG_PROBE", ["p 0x10"], 2),
    ("FAIL_REG_PROBE", ["p gcd @gcd+zz"], 2),
    ("BAD_PROBE_ADDR", ["p gcd @no_such_symbol"], 2),
]

NOT_APPLICABLE = {
    "NO_TRACEPOINT", "BAD_TP_NAME", "NO_EVENT_INFO", "BAD_ATTACH_EVENT", "BAD_ATTACH_ARG",
    "NO_EP_FILTER", "NO_RETVAL", "NO_BTFARG", "NO_BTF_ENTRY", "BAD_VAR_ARGS", "ARGS_2LONG",
    "ARGIDX_2BIG", "NO_PTR_STRCT", "NOSUP_DAT_ARG", "BAD_HYPHEN", "NO_BTF_FIELD",
    "BAD_BTF_TID", "BAD_TYPE4STR",
}  # fmt: skip


@pytest.mark.parametrize(("code", "text", "column"), PARSE_CASES)
def test_refused_definition_has_the_kernel_message_and_caret(
    symbols: KernelSymbols, code: str, text: str, column: int
) -> None:
    with pytest.raises(DefinitionError) as info:
        parse(text, "x86_64", symbols)
    err = info.value
    assert (err.code, err.position) == (code, column), err.error_log()
    lines = err.error_log().splitlines()
    assert lines[0].endswith(f"error: {ERRORS[code]}")
    assert lines[1] == f"  Command: {' '.join(text.split())}"
    assert lines[2] == " " * (len("  Command: ") + column) + "^"


@pytest.mark.parametrize(("code", "commands", "column"), REGISTER_CASES)
def test_refused_registration_has_the_kernel_message(code: str, commands: list[str],
                                                     column: int) -> None:
    m = Machine("x86_64")
    m.load_elf(bundled_image("x86_64"))
    session = TraceSession(m)
    for text in commands[:-1]:
        session.define(text)
    before = (dict(m.points), m.read(m.images[0].symbols["gcd"], 16))
    with pytest.raises(DefinitionError) as info:
        session.define(commands[-1])
    assert (info.value.code, info.value.position) == (code, column), info.value.error_log()
    assert (dict(m.points), m.read(m.images[0].symbols["gcd"], 16)) == before


def test_ambiguous_symbol_is_not_unique() -> None:
    class Twice(SymbolCounter):
        def count(self, name: str) -> int:
            return 2

    with pytest.raises(DefinitionError) as info:
        parse("p:ev dup_name+4", "x86_64", Twice())
    assert (info.value.code, info.value.position) == ("NON_UNIQ_SYMBOL", 5)


def test_docs_account_for_every_kernel_error() -> None:
    """docs/trace.md lists every ERRORS entry once, as tested (and it is) or not applicable
    with a reason."""
    rows = re.findall(r"^\| `([A-Z0-9_]+)` \| (.*?) \| (tested|n/a) \| (.*?) \|$",
                      (ROOT / "docs" / "trace.md").read_text(), re.M)
    assert [r[0] for r in rows] == list(ERRORS)
    tested = {c for c, *_ in PARSE_CASES} | {c for c, *_ in REGISTER_CASES}
    tested.add("NON_UNIQ_SYMBOL")
    for code, text, status, reason in rows:
        assert text.replace("\\|", "|") == ERRORS[code].replace("'", "'")
        assert (status == "tested") == (code in tested), code
        assert (status == "n/a") == (code in NOT_APPLICABLE), code
        assert reason.strip(), code
    assert len(ERRORS) == 79


def test_errors_list_is_the_kernels_in_order() -> None:
    """Spot checks of Linux 6.12's list: first, last, and the entries around $arg*."""
    names = list(ERRORS)
    assert names[0] == "FILE_NOT_FOUND" and names[-1] == "EVENT_TOO_BIG"
    assert names[names.index("BAD_VAR_ARGS") + 1] == "NOFENTRY_ARGS"


# -- accepted definitions -------------------------------------------------------------------


def _ok(text: str, symbols: SymbolCounter, isa: str = "x86_64") -> ProbeDefinition:
    d = parse(text, isa, symbols)
    assert isinstance(d, ProbeDefinition)
    return d


def test_default_event_names_follow_the_kernel(symbols: KernelSymbols) -> None:
    assert _ok("p gcd", symbols).event == "p_gcd_0"
    assert _ok("p gcd+0x4", symbols).event == "p_gcd_4"
    assert _ok("r gcd", symbols).event == "r_gcd_0"
    assert _ok("p gcd%return", symbols).event == "r_gcd_0"
    assert _ok("p 0x401000", symbols).event == "p_0x0000000000401000"
    assert _ok(f"r {USER}:0x1040", symbols).event == "p_user_0x1040"
    d = _ok("p:grp/ gcd", symbols)
    assert (d.group, d.event) == ("grp", "p_gcd_0")
    assert (_ok("p:a.b gcd", symbols).group, _ok("p gcd", symbols).group) == ("a", "kprobes")
    assert _ok(f"p {USER}:0x1040", symbols).group == "uprobes"


def test_maxactive_return_and_argument_names(symbols: KernelSymbols) -> None:
    d = _ok("r0x10:ev gcd a=%di %si $retval", symbols)
    assert (d.maxactive, d.is_return, d.event) == (16, True, "ev")
    assert [a.name for a in d.args] == ["a", "arg2", "arg3"]
    assert _ok("p gcd %ax", symbols).args[0].type.name == "x64"
    assert _ok("p gcd $comm", symbols).args[0].type.name == "string"


@pytest.mark.parametrize(("isa", "good", "bad"), [
    ("x86_64", ["ax", "orig_ax", "flags", "ip", "r15", "sp"], ["rax", "eax", "rip", "AX"]),
    ("aarch64", ["x0", "x30", "lr", "sp", "pc", "pstate"], ["w0", "x31", "fp", "X0"]),
    ("riscv64", ["a0", "ra", "epc", "s11", "orig_a0"], ["x10", "pc", "zero", "fp"]),
    ("loongarch64", ["r4", "r31", "csr_era", "orig_a0"], ["a0", "sp", "r32", "pc"]),
])
def test_register_names_are_each_kernels_table(isa: str, good: list[str],
                                               bad: list[str]) -> None:
    class Any_(SymbolCounter):
        def count(self, name: str) -> int:
            return 1

    for name in good:
        assert _ok(f"p f %{name}", Any_(), isa).args[0].code[0].op is Op.REG
    for name in bad:
        with pytest.raises(DefinitionError) as info:
            parse(f"p f %{name}", isa, Any_())
        assert info.value.code == "BAD_REG_NAME"


def test_deletion_forms() -> None:
    d = parse("-:grp/ev a=%di", "x86_64")
    assert isinstance(d, Deletion) and (d.group, d.event, d.args) == ("grp", "ev", ["a=%di"])
    for bad in ("-ev", "-:"):
        with pytest.raises(DefinitionError):
            parse(bad, "x86_64")


def test_kernel_number_parsing() -> None:
    assert kstrtoul("0x10") == 16 and kstrtoul("010") == 8 and kstrtoul("+5") == 5
    assert kstrtoul("-1") is None and kstrtoul("0x") is None and kstrtoul("1 ") is None
    assert kstrtoul(str(1 << 64)) is None and kstrtoul("5\n") == 5
    assert kstrtol("-0x8") == -8 and kstrtol(str(1 << 63)) is None
    assert kstrtol("-" + str(1 << 63)) == -(1 << 63)
    assert simple_strtoul("12@3") == (12, "@3") and simple_strtoul("x") == (0, "x")


# -- robustness -------------------------------------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_PIECES = ["p", "r", "-", ":", "/", " ", "gcd", "+", "-", "4", "0x", "%", "ax", "di", "rax",
           "$", "arg", "stack", "retval", "comm", "@", "(", ")", "u", "\\", '"', "=", "x",
           "string", "u8", "s16", "b3@2/8", "[", "]", "2", "symbol", "%return", "*", ".", "1"]


@settings(max_examples=200)
@given(st.lists(st.sampled_from(_PIECES), max_size=14).map("".join))
def test_any_command_is_parsed_or_refused_by_a_definition_error(text: str) -> None:
    class One(SymbolCounter):
        def count(self, name: str) -> int:
            return 1 if name == "gcd" else 0

    try:
        parse(text, "x86_64", One())
    except DefinitionError as err:
        assert err.code is None or err.code in ERRORS
        assert err.position is None or 0 <= err.position <= len(" ".join(text.split())) + 1


_BASE = st.sampled_from(["%di", "%si", "%sp", "%ip", "$stack", "$stack0", "$stack3", "$comm",
                         "@0x20000000", "@gcd", "@gcd+4", "\\0x20000000", "\\-1", "$arg1",
                         "$arg9", "@0x10"])


def _deref(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.tuples(st.sampled_from(["+", "-", "+u", "-u"]), st.integers(0, 64), inner).map(
        lambda t: f"{t[0]}{t[1]}({t[2]})")


_FETCH = st.recursive(_BASE, _deref, max_leaves=3)
_TYPE = st.sampled_from(["", ":u8", ":s32", ":x16", ":char", ":string", ":ustring", ":symbol",
                         ":symstr", ":b3@2/8", ":u8[3]", ":string[2]", ":s64[2]"])


@pytest.fixture(scope="module")
def session_machine() -> Machine:
    m = Machine("x86_64")
    m.load_elf(bundled_image("x86_64"))
    return m


@settings(max_examples=60)
@given(st.lists(st.tuples(_FETCH, _TYPE).map("".join), min_size=1, max_size=4))
def test_accepted_fetch_arguments_always_record_an_event(session_machine: Machine,
                                                         args: list[str]) -> None:
    """Whatever the kernel accepts fetches without an error at the hit: unmapped reads
    become 0 or (fault), as in Linux."""
    session = TraceSession(session_machine)
    try:
        session.define("p:fz gcd " + " ".join(args))
    except DefinitionError:
        return
    try:
        assert session_machine.call(session_machine.images[0].symbols["gcd"], 48, 18) == 6
        assert len(session.records) == 1
        assert len(session.records[0].args) == len(args)
    finally:
        session.define("-:fz")
    assert not session_machine.points
