"""x86_64 prefixes on control flow, from concrete encodings.

The prefix area is any mix of legacy and REX bytes; only a REX standing last counts
(SDM Vol. 2, 2.2.1).  Each branch below carries prefixes in an order a naive parser misses
(REX before a legacy prefix, two REX prefixes, repeated prefixes); it must be simulated with
the right length and operands, and probed runs must end where unprobed runs end.
"""

from __future__ import annotations

import pytest

from kprobe_ref.arch import ARCHES
from tests.helpers import CODE, DATA, SCRATCH_STACK, compare_probed

X86 = ARCHES["x86_64"]
PAD = b"\x90" * 0x40


def _decode(code: bytes) -> tuple[str, str, str, dict[str, int]]:
    d = X86.decode(code + bytes(16), CODE, False)
    return d.verdict.value, d.klass, d.reason, dict(d.fields)


@pytest.mark.parametrize(("hexcode", "klass", "length"), [
    ("402ee810000000", "call_rel32", 7),      # REX, then cs: the REX is ignored
    ("4840c3", "ret", 3),                     # two REX prefixes
    ("f3f3c3", "ret", 3),                     # a repeated prefix
    ("412e4874fe", "jcc_rel8", 5),            # REX, cs, REX.W: the last REX counts
    ("48262e3ee9fbffffff", "jmp_rel32", 9),   # REX.W before three segment prefixes
    ("40670f84f6ffffff", "jcc_rel32", 8),     # REX, addr32 (ignored by a relative jcc)
    ("3e40ffd0", "call_ind_reg", 4),          # notrack, REX
    ("f240e2fe", None, 4),                    # bnd rex loop: loop is simulated
])  # fmt: skip
def test_prefixed_control_flow_is_never_stepped(hexcode: str, klass: str | None,
                                                length: int) -> None:
    verdict, got, _reason, fields = _decode(bytes.fromhex(hexcode))
    assert verdict == "simulate", (hexcode, got)
    if klass is not None:
        assert got == klass
    assert fields["len"] == length


@pytest.mark.parametrize(("hexcode", "reg"), [
    ("41ffd0", 8),        # call r8
    ("4041ffd0", 8),      # the last REX has REX.B: call r8
    ("4140ffd0", 0),      # REX.B followed by a plain REX: call rax
    ("412effd0", 0),      # REX.B followed by cs: ignored, call rax
    ("4941ffe7", 15),     # jmp r15
])  # fmt: skip
def test_indirect_register_comes_from_the_effective_rex(hexcode: str, reg: int) -> None:
    verdict, _klass, _reason, fields = _decode(bytes.fromhex(hexcode))
    assert verdict == "simulate"
    assert fields["reg"] == reg


@pytest.mark.parametrize(("hexcode", "reason"), [
    ("6640e80000", "operand-size-branch"),    # 66 anywhere in the prefix area
    ("40662ee80000", "operand-size-branch"),
    ("4867e2fe", "address-size-branch"),      # loop counting in ecx
    ("6748e3fe", "address-size-branch"),      # capstone calls it jrcxz; it is jecxz
    ("40cc", "exception-generating"),
    ("4840cf", "privilege-change"),           # iretq after two REX bytes
    ("400f05", "privilege-change"),           # syscall after a REX
    ("0f01c1", "privilege-change"),           # vmcall: Linux refuses VMX instructions
    ("0f01d9", "privilege-change"),           # vmmcall
    ("f30f01ca", "privilege-change"),         # eretu (FRED); plain 0f01ca is clac
    ("f20f01ca", "privilege-change"),         # erets
    ("652eff142500000000", "segment-relative-target"),
])  # fmt: skip
def test_prefixed_hazards_are_refused(hexcode: str, reason: str) -> None:
    verdict, _klass, got, _fields = _decode(bytes.fromhex(hexcode))
    assert (verdict, got) == ("reject", reason)


def test_clac_without_a_mandatory_prefix_is_stepped() -> None:
    assert _decode(bytes.fromhex("0f01ca"))[:3] == ("step", "plain", "no-pc-use")


@pytest.mark.parametrize("hexcode", ["402e488d0500010000", "48408b0500010000",
                                     "2e40670fb60500010000"])
def test_rip_relative_after_a_mixed_prefix_area_is_relocated(hexcode: str) -> None:
    verdict, klass, _reason, fields = _decode(bytes.fromhex(hexcode))
    assert (verdict, klass) == ("step", "rip_relative")
    assert fields["disp_offset"] == len(bytes.fromhex(hexcode)) - 4


def test_probed_call_with_an_ignored_rex_returns_to_its_caller() -> None:
    # 40 2e e8 rel32: call +0x10; the callee is `mov eax, 7; ret`.
    call = bytes.fromhex("402ee8") + (0x10).to_bytes(4, "little")
    callee = bytes.fromhex("b807000000c3")
    code = call + b"\xcc" * 0x10 + callee + PAD
    after_call = CODE + len(call)
    stack = SCRATCH_STACK + 0x1000
    plain, _probed = compare_probed("x86_64", code, {"rsp": stack}, {after_call})
    assert plain.stop == after_call
    assert plain.regs["rax"] == 7


def test_probed_ret_after_two_rex_prefixes_returns() -> None:
    code = bytes.fromhex("4840c3") + PAD
    target = CODE + 0x20
    stack = SCRATCH_STACK + 0x1000
    plain, _ = compare_probed("x86_64", code, {"rsp": stack}, {target},
                              stack=bytes(0x1000) + target.to_bytes(8, "little"))
    assert plain.stop == target


def test_probed_call_through_a_register_named_by_the_last_rex() -> None:
    code = bytes.fromhex("4140ffd0") + PAD
    target = CODE + 0x30
    plain, _ = compare_probed("x86_64", code, {"rsp": SCRATCH_STACK + 0x1000, "rax": target,
                                              "r8": DATA}, {target})
    assert plain.stop == target


def test_probed_eip_relative_load_is_relocated() -> None:
    # 67 8b 05 disp32: mov eax, [eip + disp32] (address-size prefix: EIP-relative).
    disp = DATA + 0x10 - (CODE + 7)
    code = bytes.fromhex("678b05") + (disp & 0xFFFF_FFFF).to_bytes(4, "little") + PAD
    data = bytes(0x10) + (0x1234_5678).to_bytes(4, "little")
    plain, _ = compare_probed("x86_64", code, {}, {CODE + 7}, data=data)
    assert plain.regs["rax"] == 0x1234_5678


def test_a_control_transfer_missing_from_the_table_is_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The safety net under the table: with the ``ret`` row gone, ``c3`` is refused because
    capstone calls it a return, never stepped."""
    from kprobe_ref.arch.x86_64 import decode as x86_decode

    rows = tuple(r for r in x86_decode.ROWS if r.klass != "ret")
    monkeypatch.setattr(x86_decode, "_BY_OPCODE", x86_decode._index(rows))
    assert _decode(bytes.fromhex("4840c3"))[1:3] == ("unclassified_flow",
                                                     "control-flow-unclassified")


@pytest.mark.parametrize("hexcode", ["f0e800000000", "40f0c3", "f0ffd0", "f0eb00"])
def test_lock_on_a_branch_is_refused(hexcode: str) -> None:
    """The CPU raises #UD for a lock prefix on a branch; it must not be simulated."""
    assert _decode(bytes.fromhex(hexcode))[0] == "reject"
