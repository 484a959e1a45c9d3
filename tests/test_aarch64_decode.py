"""aarch64 decode table: disjoint rows, verdicts of concrete encodings, agreement with
capstone on random words, the exclusive-sequence scan, and the generated document."""

from __future__ import annotations

import random
from collections.abc import Callable
from itertools import combinations

import capstone
import pytest

from kprobe_ref.arch import ARCHES
from kprobe_ref.arch.aarch64 import OPS
from kprobe_ref.arch.aarch64 import encoding as enc
from kprobe_ref.arch.aarch64.decode import ROWS, decode, lookup, sequence_hazard
from kprobe_ref.arch.aarch64.simulate import RULES
from kprobe_ref.arch.base import Verdict
from kprobe_ref.reasons import REASONS
from kprobe_ref.tools.docgen import arch_doc

CS = capstone.Cs(capstone.CS_ARCH_ARM64, capstone.CS_MODE_ARM)


def cs_text(w: int) -> str | None:
    for insn in CS.disasm(enc.to_bytes(w), 0x1000):
        return f"{insn.mnemonic} {insn.op_str}".strip()
    return None


def test_registered_in_arches() -> None:
    assert ARCHES["aarch64"].name == OPS.name == "aarch64"


def test_rows_pairwise_disjoint() -> None:
    for a, b in combinations(ROWS, 2):
        (ma, va), (mb, vb) = a.mask_match, b.mask_match
        assert (va ^ vb) & ma & mb != 0, f"{a.klass} and {b.klass} overlap"


def test_rows_have_known_reasons_and_rules() -> None:
    for row in ROWS:
        assert row.reason in REASONS, row.klass
        assert (row.verdict is Verdict.SIMULATE) == (row.klass in RULES), row.klass
        assert row.matches(row.mask_match[1])


def test_klass_names_unique() -> None:
    assert len({r.klass for r in ROWS}) == len(ROWS)


# Words assembled by `zig cc -target aarch64-freestanding-none` (armv8.8-a+mops, pauth);
# the capstone text is checked too, so a typo in a word cannot go unnoticed.
REJECTS: tuple[tuple[int, str, str, str], ...] = (
    (0xD4000021, "svc #1", "svc", "exception-generating"),
    (0xD4000042, "hvc #2", "hvc", "exception-generating"),
    (0xD4000063, "smc #3", "smc", "exception-generating"),
    (0xD4200120, "brk #9", "brk", "exception-generating"),
    (0xD4400020, "hlt #1", "hlt", "exception-generating"),
    (0xD4A00001, "dcps1", "dcps1", "exception-generating"),
    (0xD4A00002, "dcps2", "dcps2", "exception-generating"),
    (0xD4A00003, "dcps3", "dcps3", "exception-generating"),
    (0xD69F03E0, "eret", "eret", "privilege-change"),
    (0xD69F0BFF, "eretaa", "eretaa", "privilege-change"),
    (0xD69F0FFF, "eretab", "eretaa", "privilege-change"),
    (0xD61F083F, "braaz x1", "braz", "aarch64-pointer-authentication"),
    (0xD61F0C5F, "brabz x2", "braz", "aarch64-pointer-authentication"),
    (0xD63F087F, "blraaz x3", "blraz", "aarch64-pointer-authentication"),
    (0xD63F0C9F, "blrabz x4", "blraz", "aarch64-pointer-authentication"),
    (0xD65F0BFF, "retaa", "retaa", "aarch64-pointer-authentication"),
    (0xD65F0FFF, "retab", "retaa", "aarch64-pointer-authentication"),
    (0xD71F0822, "braa x1, x2", "bra", "aarch64-pointer-authentication"),
    (0xD71F0C3F, "brab x1, sp", "bra", "aarch64-pointer-authentication"),
    (0xD73F08A6, "blraa x5, x6", "blra", "aarch64-pointer-authentication"),
    (0xD73F0CA6, "blrab x5, x6", "blra", "aarch64-pointer-authentication"),
    (0xD503219F, "autia1716", "aut_1716", "aarch64-pointer-authentication"),
    (0xD50321DF, "autib1716", "aut_1716", "aarch64-pointer-authentication"),
    (0xD503239F, "autiaz", "aut_z_sp", "aarch64-pointer-authentication"),
    (0xD50323BF, "autiasp", "aut_z_sp", "aarch64-pointer-authentication"),
    (0xD50323DF, "autibz", "aut_z_sp", "aarch64-pointer-authentication"),
    (0xD50323FF, "autibsp", "aut_z_sp", "aarch64-pointer-authentication"),
    (0xD50342DF, "msr daifset, #2", "msr_imm", "aarch64-pstate-daif"),
    (0xD50342FF, "msr daifclr, #2", "msr_imm", "aarch64-pstate-daif"),
    (0xD50041BF, "msr spsel, #1", "msr_imm", "aarch64-pstate-daif"),
    (0xD500419F, "msr pan, #1", "msr_imm", "aarch64-pstate-daif"),
    (0xD500401F, "cfinv", "msr_imm", "aarch64-pstate-daif"),
    (0xD51B4223, "msr daif, x3", "msr_daif", "aarch64-pstate-daif"),
    (0xD53B4224, "mrs x4, daif", "mrs_daif", "aarch64-pstate-daif"),
    (0xC85F7C20, "ldxr x0, [x1]", "ldxr", "exclusive-access"),
    (0x885FFC20, "ldaxr w0, [x1]", "ldxr", "exclusive-access"),
    (0x085F7C20, "ldxrb w0, [x1]", "ldxr", "exclusive-access"),
    (0xC8027C20, "stxr w2, x0, [x1]", "stxr", "exclusive-access"),
    (0xC802FC20, "stlxr w2, x0, [x1]", "stxr", "exclusive-access"),
    (0x48027C20, "stxrh w2, w0, [x1]", "stxr", "exclusive-access"),
    (0xC87F0440, "ldxp x0, x1, [x2]", "ldxp", "exclusive-access"),
    (0x887F8440, "ldaxp w0, w1, [x2]", "ldxp", "exclusive-access"),
    (0xC8230440, "stxp w3, x0, x1, [x2]", "stxp", "exclusive-access"),
    (0xC8238440, "stlxp w3, x0, x1, [x2]", "stxp", "exclusive-access"),
    (0x1D010440, "cpyp [x0]!, [x1]!, x2!", "mops", "aarch64-mops"),
    (0x1D410440, "cpym [x0]!, [x1]!, x2!", "mops", "aarch64-mops"),
    (0x1D810440, "cpye [x0]!, [x1]!, x2!", "mops", "aarch64-mops"),
    (0x19010440, "cpyfp [x0]!, [x1]!, x2!", "mops", "aarch64-mops"),
    (0x19C20420, "setp [x0]!, x1!, x2", "mops", "aarch64-mops"),
    (0x19C24420, "setm [x0]!, x1!, x2", "mops", "aarch64-mops"),
    (0x19C28420, "sete [x0]!, x1!, x2", "mops", "aarch64-mops"),
    (0xDC000040, None, "ldr_lit_v_unallocated", "undecodable"),
)  # type: ignore[assignment]


@pytest.mark.parametrize(("word", "text", "klass", "reason"), REJECTS)
def test_reject_class_and_reason(word: int, text: str | None, klass: str, reason: str) -> None:
    assert cs_text(word) == text
    d = decode(enc.to_bytes(word), 0x4000)
    assert (d.verdict, d.klass, d.reason) == (Verdict.REJECT, klass, reason)


STEPPED: tuple[tuple[int, str], ...] = (
    (0xC8A07C41, "cas x0, x1, [x2]"),
    (0x48207C82, "casp x0, x1, x2, x3, [x4]"),
    (0xC8DFFC20, "ldar x0, [x1]"),
    (0xC89FFC20, "stlr x0, [x1]"),
    (0xD503233F, "paciasp"),
    (0xD503241F, "bti"),
    (0xD50320FF, "xpaclri"),
    (0xD503203F, "yield"),
    (0xD503209F, "sev"),
    (0xD503229F, "csdb"),
    (0xD51BD040, "msr tpidr_el0, x0"),
    (0xD53B4200, "mrs x0, nzcv"),
    (0xD5033F5F, "clrex"),
    (0xD5033BBF, "dmb ish"),
    (0x8B020020, "add x0, x1, x2"),
    (0xF9400020, "ldr x0, [x1]"),
)


@pytest.mark.parametrize(("word", "text"), STEPPED)
def test_stepped_words(word: int, text: str) -> None:
    assert cs_text(word) == text
    d = decode(enc.to_bytes(word), 0x4000)
    assert (d.verdict, d.klass, d.reason) == (Verdict.STEP_OUT_OF_LINE, "plain", "no-pc-use")


SIMULATED: tuple[tuple[int, str, str], ...] = (
    (enc.encode_b(8), "b #0x1008", "b"),
    (enc.encode_bl(-4), "bl #0xffc", "bl"),
    (enc.encode_b_cond(1, 16), "b.ne #0x1010", "b_cond"),
    (enc.encode_bc_cond(0, 4), "bc.eq #0x1004", "bc_cond"),
    (enc.encode_cbz(3, 8, sf=0), "cbz w3, #0x1008", "cbz"),
    (enc.encode_cbz(3, 8, nonzero=True), "cbnz x3, #0x1008", "cbnz"),
    (enc.encode_tbz(4, 40, 12), "tbz x4, #0x28, #0x100c", "tbz"),
    (enc.encode_tbz(4, 3, 12, nonzero=True), "tbnz w4, #3, #0x100c", "tbnz"),
    (enc.encode_br(30), "br x30", "br"),
    (enc.encode_blr(30), "blr x30", "blr"),
    (enc.encode_ret(), "ret", "ret"),
    (enc.encode_ret(9), "ret x9", "ret"),
    (enc.encode_adr(0, 5), "adr x0, #0x1005", "adr"),
    (enc.encode_adrp(1, 0x3000), "adrp x1, #0x4000", "adrp"),
    (enc.encode_ldr_lit(2, 8, 4), "ldr w2, #0x1008", "ldr_lit_w"),
    (enc.encode_ldr_lit(2, 8), "ldr x2, #0x1008", "ldr_lit_x"),
    (enc.encode_ldrsw_lit(2, 8), "ldrsw x2, #0x1008", "ldrsw_lit"),
    (enc.encode_prfm_lit(0, 8), "prfm pldl1keep, #0x1008", "prfm_lit"),
    (enc.encode_ldr_lit_simd(31, 8, 4), "ldr s31, #0x1008", "ldr_lit_s"),
    (enc.encode_ldr_lit_simd(1, 8, 8), "ldr d1, #0x1008", "ldr_lit_d"),
    (enc.encode_ldr_lit_simd(2, 8, 16), "ldr q2, #0x1008", "ldr_lit_q"),
    (enc.NOP, "nop", "nop"),
    (0xD503205F, "wfe", "wfe"),
    (0xD503207F, "wfi", "wfi"),
)


@pytest.mark.parametrize(("word", "text", "klass"), SIMULATED)
def test_encoders_agree_with_capstone_and_decode(word: int, text: str, klass: str) -> None:
    assert cs_text(word) == text
    d = decode(enc.to_bytes(word), 0x1000)
    assert (d.verdict, d.klass) == (Verdict.SIMULATE, klass)


OUT_OF_RANGE: tuple[tuple[Callable[..., int], tuple[int, ...]], ...] = (
    (enc.encode_b, (1 << 27,)),
    (enc.encode_b, (2,)),
    (enc.encode_b_cond, (0, 1 << 20)),
    (enc.encode_tbz, (0, 0, 1 << 15)),
    (enc.encode_adr, (0, 1 << 20)),
    (enc.encode_adrp, (0, 0x800)),
)


@pytest.mark.parametrize(("encoder", "args"), OUT_OF_RANGE)
def test_encoders_refuse_out_of_range_offsets(
    encoder: Callable[..., int], args: tuple[int, ...]
) -> None:
    with pytest.raises(ValueError):
        encoder(*args)


def test_fields_are_raw_values() -> None:
    d = decode(enc.to_bytes(enc.encode_b(-4)), 0x1000)
    assert d.fields == {"imm": (1 << 26) - 1}
    d = decode(enc.to_bytes(enc.encode_tbz(7, 63, -8, nonzero=True)), 0x1000)
    assert d.fields == {"b5": 1, "b40": 31, "imm": (1 << 14) - 2, "rt": 7}


def test_short_code_is_undecodable() -> None:
    assert decode(b"\x1f\x20", 0x1000).reason == "undecodable"


def test_breakpoints_are_linux_brk_immediates() -> None:
    d = decode(enc.to_bytes(enc.NOP), 0)
    assert OPS.breakpoint(d, False) == enc.to_bytes(0xD4200080)
    assert OPS.breakpoint(d, True) == enc.to_bytes(0xD42000A0)
    assert OPS.step_breakpoint(False) == enc.to_bytes(0xD42000C0)
    assert cs_text(0xD42000C0) == "brk #6"


# -- capstone agreement on random words ------------------------------------------------------

_EXPECT: dict[str, tuple[str, ...]] = {
    "b": ("b",), "bl": ("bl",), "cbz": ("cbz",), "cbnz": ("cbnz",), "tbz": ("tbz",),
    "tbnz": ("tbnz",), "br": ("br",), "blr": ("blr",), "ret": ("ret",), "adr": ("adr",),
    "adrp": ("adrp",), "ldr_lit_w": ("ldr",), "ldr_lit_x": ("ldr",), "ldrsw_lit": ("ldrsw",),
    "prfm_lit": ("prfm",), "ldr_lit_s": ("ldr",), "ldr_lit_d": ("ldr",), "ldr_lit_q": ("ldr",),
}  # fmt: skip
_TOPS = (
    0x14,
    0x17,
    0x94,
    0x97,
    0x54,
    0x34,
    0x35,
    0xB4,
    0xB5,
    0x36,
    0x37,
    0xB6,
    0xB7,
    0xD6,
    0x10,
    0x30,
    0x70,
    0x90,
    0xF0,
    0x18,
    0x58,
    0x98,
    0xD8,
    0x1C,
    0x5C,
    0x9C,
    0xDC,
)


def _klass_from_capstone(w: int) -> str | None:
    """The branch/literal class capstone's decoding implies, or None for any other word."""
    insns = list(CS.disasm(enc.to_bytes(w), 0x1000))
    if not insns:
        return None
    mn, ops = insns[0].mnemonic, insns[0].op_str
    if mn.startswith("b."):
        return "b_cond"
    if mn.startswith("bc."):
        return "bc_cond"
    literal = "[" not in ops and "#" in ops
    if mn in ("adr", "adrp") and not literal:
        return None  # SVE ADR (vector)
    if mn in ("ldr", "ldrsw", "prfm") and not literal:
        return None
    for klass, names in _EXPECT.items():
        if mn in names and (klass.startswith("ldr") or klass.startswith("prfm")) == (
            mn in ("ldr", "ldrsw", "prfm")
        ):
            if mn == "ldr":
                reg = ops.split(",")[0][0]
                return {
                    "w": "ldr_lit_w",
                    "x": "ldr_lit_x",
                    "s": "ldr_lit_s",
                    "d": "ldr_lit_d",
                    "q": "ldr_lit_q",
                }[reg]
            return klass
    return None


def test_capstone_agrees_on_branch_and_literal_classes() -> None:
    rng = random.Random(20240604)
    checked = 0
    for _ in range(20_000):
        w = rng.choice(_TOPS) << 24 | rng.getrandbits(24)
        if rng.random() < 0.3:
            w = rng.getrandbits(32)
        expected = _klass_from_capstone(w)
        row = lookup(w)
        ours = (
            row.klass if row is not None and row.klass in {*_EXPECT, "b_cond", "bc_cond"} else None
        )
        assert ours == expected, f"{w:#010x}: capstone {cs_text(w)!r} ours {ours}"
        checked += expected is not None
    assert checked > 10_000


# -- exclusive sequences ------------------------------------------------------------------------


def _code(*words: int) -> bytes:
    return b"".join(enc.to_bytes(w) for w in words)


LDAXR, STLXR, ADD, CBNZ_BACK = 0x885FFC20, 0xC802FC20, 0x8B020020, 0x35FFFFA2


def test_probe_between_ldxr_and_stxr_is_a_hazard() -> None:
    code = _code(ADD, LDAXR, ADD, ADD, STLXR, CBNZ_BACK, ADD)
    start = 0x1000
    assert sequence_hazard(code[:12], start, start + 8) == "inside-exclusive-sequence"
    assert sequence_hazard(code[:16], start, start + 12) == "inside-exclusive-sequence"
    assert sequence_hazard(code[:24], start, start + 20) is None
    assert sequence_hazard(code[:28], start, start + 24) is None
    assert sequence_hazard(code[:4], start, start) is None


def test_scan_stops_after_32_words_and_at_start() -> None:
    code = _code(LDAXR, *([ADD] * 40))
    assert sequence_hazard(code, 0x1000, 0x1000 + 4 * 32) == "inside-exclusive-sequence"
    assert sequence_hazard(code, 0x1000, 0x1000 + 4 * 33) is None
    assert sequence_hazard(code[4:12], 0x1004, 0x1008) is None


# -- generated document ----------------------------------------------------------------------


def test_docgen_lists_every_row_and_difference() -> None:
    text = arch_doc("aarch64")
    for row in ROWS:
        assert f"| {row.klass} |" in text
    assert "## Where this differs from Linux" in text
