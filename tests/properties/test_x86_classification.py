"""x86_64 classification against an independent decoder (iced-x86), sampled.

``tools/x86_campaign.py`` runs the whole space (about 25 M encodings: prefix arrangements x
the four opcode maps x ModRM forms, plus VEX/EVEX/XOP) by hand or with
``X86_CAMPAIGN=full``; here a sample of it runs, and Hypothesis draws free prefix areas (any
legacy and REX bytes, repeated, in any order) in front of any opcode and ModRM byte.  No
encoding kprobe_ref steps may be a control transfer or carry an unrelocated RIP-relative
operand in iced's view, and every simulated one must agree with iced on kind, length, target
and register.  Where the decoders disagree, unicorn settles it (run at two addresses).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from kprobe_ref.arch.x86_64 import decode as x86_decode
from tools import x86_campaign as campaign

VECTORS = Path(__file__).parent.parent / "vectors" / "x86_disagreements.json"
FULL = os.environ.get("X86_CAMPAIGN") == "full"
THOROUGH = os.environ.get("HYPOTHESIS_PROFILE") == "thorough"

PREFIX_BYTES = sorted({0x66, 0x67, 0xF0, 0xF2, 0xF3, 0x2E, 0x3E, 0x26, 0x36, 0x64, 0x65,
                       *range(0x40, 0x50)})
ESCAPES = (b"", b"\x0f", b"\x0f\x38", b"\x0f\x3a")


def _assert_safe(code: bytes) -> None:
    res = campaign.check(code)
    assert res.failure is None, (code.hex(), res)
    if res.disagreement in ("iced-invalid", "length") and res.verdict == "step-plain":
        insn = code[: res.ours_length]
        settled = campaign.settle(insn)
        assert campaign.steppable(settled, res.ours_length, insn), (code.hex(), settled)


@given(
    prefixes=st.lists(st.sampled_from(PREFIX_BYTES), max_size=4),
    escape=st.sampled_from(ESCAPES),
    opcode=st.integers(0, 255),
    modrm=st.integers(0, 255),
    rest=st.binary(min_size=12, max_size=12),
)
@example(prefixes=[0x40, 0x2E], escape=b"", opcode=0xE8, modrm=0x10, rest=bytes(12))
@example(prefixes=[0x48, 0x40], escape=b"", opcode=0xC3, modrm=0, rest=bytes(12))
@example(prefixes=[0x41, 0x2E], escape=b"", opcode=0xFF, modrm=0xD0, rest=bytes(12))
@example(prefixes=[0x67], escape=b"\x0f", opcode=0xB6, modrm=0x05, rest=bytes(12))
def test_free_prefix_areas_are_classified_by_what_they_do(
    prefixes: list[int], escape: bytes, opcode: int, modrm: int, rest: bytes
) -> None:
    _assert_safe(bytes(prefixes) + escape + bytes([opcode, modrm]) + rest)


def test_a_sample_of_the_campaign_space_has_no_failure() -> None:
    n = 20_000 if THOROUGH else 600
    legacy = campaign.run(jobs=1, sample=n, seed=12, bodies="legacy")
    vex = campaign.run(jobs=1, sample=n // 3, seed=12, bodies="vex")
    assert legacy.checked > 1500
    assert dict(legacy.failures) == {}
    assert dict(vex.failures) == {}


@pytest.mark.skipif(not FULL, reason="the exhaustive campaign runs with X86_CAMPAIGN=full")
def test_the_whole_campaign_space_has_no_failure() -> None:
    tally = campaign.run(jobs=os.cpu_count() or 2)
    assert tally.checked > 20_000_000
    assert dict(tally.failures) == {}


def _settled_groups() -> list[dict[str, object]]:
    return list(json.loads(VECTORS.read_text()))


@pytest.mark.parametrize("group", _settled_groups(), ids=lambda g: str(g["group"]))
def test_settled_disagreements_still_hold(group: dict[str, object]) -> None:
    """Each recorded disagreement between capstone and iced, with unicorn's settlement: our
    verdict is unchanged, and an encoding we step behaves in unicorn like a stepped
    instruction of our length (or faults at both addresses)."""
    code = bytes.fromhex(str(group["example"]))
    d = x86_decode.decode(code, campaign.ADDR)
    ours = group["ours"]
    assert isinstance(ours, dict)
    assert (campaign.verdict_label(d), d.reason) == (ours["verdict"], ours["reason"])
    unicorn = group["unicorn"]
    assert isinstance(unicorn, dict)
    if ours["verdict"] == "step-plain":
        settled = campaign.settle(code[: d.length])
        assert settled.outcome == unicorn["outcome"]
        assert campaign.steppable(settled, d.length, code)
