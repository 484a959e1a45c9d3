"""Integrity and sanity checks of the committed LoongArch64 reference vectors.

These tests need neither qemu nor a LoongArch toolchain: they check the manifest
(hashes, counts), the shape of every record, and recompute the result of a few
simple instruction kinds in plain Python as an independent check of the data.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest

VEC_DIR = Path(__file__).resolve().parent / "vectors" / "loongarch64"
M64 = (1 << 64) - 1
HEX64 = re.compile(r"^0x[0-9a-f]{16}$")
HEX32 = re.compile(r"^0x[0-9a-f]{8}$")
REG_NAMES = [f"r{n}" for n in range(1, 32)]

Record = dict[str, Any]


@cache
def manifest() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VEC_DIR / "manifest.json").read_text())
    return data


@cache
def records() -> tuple[Record, ...]:
    out: list[Record] = []
    for name in sorted(manifest()["files"]):
        for line in (VEC_DIR / name).read_text().splitlines():
            out.append(json.loads(line))
    return tuple(out)


def by_kind(kind: str) -> list[Record]:
    return [rec for rec in records() if rec["kind"] == kind]


def regs(state: Record) -> dict[int, int]:
    out = {int(name[1:]): int(value, 16) for name, value in state["regs"].items()}
    out[0] = 0
    return out


def sext(v: int, bits: int) -> int:
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >> (bits - 1) else v


# ---- manifest ----------------------------------------------------------------


def test_manifest_files_match_hashes_and_counts() -> None:
    m = manifest()
    jsonl = sorted(p.name for p in VEC_DIR.glob("*.jsonl"))
    assert sorted(m["files"]) == jsonl
    total = 0
    for name, info in m["files"].items():
        blob = (VEC_DIR / name).read_bytes()
        assert hashlib.sha256(blob).hexdigest() == info["sha256"], name
        lines = blob.decode().splitlines()
        assert len(lines) == info["records"], name
        assert len({json.loads(line)["kind"] for line in lines}) == info["kinds"], name
        total += len(lines)
    assert m["records"] == total


def test_manifest_provenance() -> None:
    m = manifest()
    assert m["qemu"].startswith("qemu-loongarch64 version")
    assert m["ziglang"]
    assert isinstance(m["seed"], int)
    assert "gen_loongarch_vectors.py" in m["command"]


def test_at_least_170_kinds_each_with_6_cases() -> None:
    counts = Counter(rec["kind"] for rec in records())
    assert len(counts) >= 170
    assert manifest()["distinct_kinds"] == len(counts)
    assert sorted(manifest()["kinds"]) == sorted(counts)
    thin = {k: n for k, n in counts.items() if n < 6}
    assert not thin


REQUIRED_TEXT = """
add.w add.d sub.w sub.d addi.w addi.d addu16i.d alsl.w alsl.wu alsl.d lu12i.w lu32i.d lu52i.d
slt sltu slti sltui and or nor xor andn orn andi ori xori sll.w sll.d srl.w srl.d sra.w sra.d
rotr.w rotr.d slli.w slli.d srli.w srli.d srai.w srai.d rotri.w rotri.d mul.w mul.d mulh.w
mulh.wu mulh.d mulh.du mulw.d.w mulw.d.wu div.w div.wu div.d div.du mod.w mod.wu mod.d mod.du
ext.w.b ext.w.h clo.w clz.w cto.w ctz.w clo.d clz.d cto.d ctz.d bytepick.w bytepick.d revb.2h
revb.4h revb.2w revb.d revh.2w revh.d bitrev.4b bitrev.8b bitrev.w bitrev.d bstrins.w bstrins.d
bstrpick.w bstrpick.d maskeqz masknez pcaddi pcalau12i pcaddu12i pcaddu18i ld.b ld.h ld.w ld.d
ld.bu ld.hu ld.wu st.b st.h st.w st.d ldx.b ldx.h ldx.w ldx.d ldx.bu ldx.hu ldx.wu stx.b stx.h
stx.w stx.d ldptr.w ldptr.d stptr.w stptr.d ll.w ll.d sc.w sc.d amswap.w amswap.d amswap_db.w
amswap_db.d amadd.w amadd.d amand.w amand.d amor.w amor.d amxor.w amxor.d ammax.w ammax.d
ammin.w ammin.d ammax.wu ammax.du ammin.wu ammin.du amadd_db.w amand_db.d ammax_db.wu
crc.w.b.w crc.w.h.w crc.w.w.w crc.w.d.w crcc.w.b.w crcc.w.h.w crcc.w.w.w crcc.w.d.w b bl beq
bne blt bge bltu bgeu beqz bnez jirl bceqz bcnez movgr2cf movcf2gr
"""


def test_required_kinds_present() -> None:
    kinds = {rec["kind"] for rec in records()}
    assert sorted(set(REQUIRED_TEXT.split()) - kinds) == []


# ---- record shape -----------------------------------------------------------


def _check_state(state: Record, *, after: bool) -> None:
    keys = {"regs", "fcc", "mem"} | ({"pc"} if after else set())
    assert set(state) == keys
    assert list(state["regs"]) == REG_NAMES
    assert all(HEX64.match(v) for v in state["regs"].values())
    assert len(state["fcc"]) == 8 and all(b in (0, 1) for b in state["fcc"])
    for area in state["mem"]:
        assert set(area) == {"addr", "hex"}
        assert HEX64.match(area["addr"])
        assert re.fullmatch(r"(?:[0-9a-f]{2})+", area["hex"])
    if after:
        assert HEX64.match(state["pc"])


def test_every_record_is_well_formed() -> None:
    for rec in records():
        assert set(rec) == {"kind", "asm", "words", "pc", "before", "after"}, rec
        assert isinstance(rec["kind"], str) and rec["kind"]
        assert isinstance(rec["asm"], str) and rec["asm"]
        # The kind names the last instruction; an FP case reads its result back with a
        # final movfr2gr.d, and then the kind names the instruction before it.
        mnems = [part.split()[0] for part in rec["asm"].split(";")]
        named = mnems[-2] if len(mnems) > 1 and mnems[-1] == "movfr2gr.d" else mnems[-1]
        assert named == rec["kind"], rec["asm"]
        assert 1 <= len(rec["words"]) <= 3
        assert all(HEX32.match(w) for w in rec["words"])
        assert HEX64.match(rec["pc"]) and int(rec["pc"], 16) % 4 == 0
        _check_state(rec["before"], after=False)
        _check_state(rec["after"], after=True)
        mb, ma = rec["before"]["mem"], rec["after"]["mem"]
        assert [a["addr"] for a in mb] == [a["addr"] for a in ma]
        assert [len(a["hex"]) for a in mb] == [len(a["hex"]) for a in ma]
        assert int(rec["after"]["pc"], 16) % 4 == 0


BRANCHES = {"b", "bl", "beq", "bne", "blt", "bge", "bltu", "bgeu", "beqz", "bnez", "jirl",
            "bceqz", "bcnez"}


def test_non_branches_fall_through_and_branches_go_both_ways() -> None:
    taken: Counter[str] = Counter()
    for rec in records():
        pc = int(rec["pc"], 16)
        nxt = pc + 4 * len(rec["words"])
        land = int(rec["after"]["pc"], 16)
        if rec["kind"] in BRANCHES:
            taken[rec["kind"]] += land != nxt
        else:
            assert land == nxt, rec["asm"]
    for kind in BRANCHES - {"b", "bl", "jirl"}:
        n = len(by_kind(kind))
        assert 3 <= taken[kind] <= n - 3, kind
    assert taken["b"] == len(by_kind("b"))


def test_unused_state_is_stable() -> None:
    # fcc only changes for movgr2cf and fcmp.*; memory only for stores / atomics.
    for rec in records():
        if rec["kind"] != "movgr2cf" and not rec["kind"].startswith("fcmp."):
            assert rec["before"]["fcc"] == rec["after"]["fcc"], rec["asm"]
        if not rec["before"]["mem"]:
            assert not rec["after"]["mem"]


# ---- independent recomputation of simple kinds -----------------------------


def _rotr(v: int, s: int) -> int:
    s %= 64
    return ((v >> s) | (v << (64 - s))) & M64


def _bytepick_d(rj: int, rk: int, sa: int) -> int:
    return ((rk << (8 * sa)) | (rj >> (64 - 8 * sa))) & M64 if sa else rk


def _revh_d(v: int) -> int:
    halves = [(v >> (16 * i)) & 0xFFFF for i in range(4)]
    return halves[3] | halves[2] << 16 | halves[1] << 32 | halves[0] << 48


# kind -> (opcode, mask, compute(word, before_regs) -> value of rd)
Semantics = tuple[int, int, Callable[[int, dict[int, int]], int]]


def _rj(w: int) -> int:
    return (w >> 5) & 31


def _rk(w: int) -> int:
    return (w >> 10) & 31


SIMPLE: dict[str, Semantics] = {
    "add.d": (0x00108000, 0xFFFF8000, lambda w, g: (g[_rj(w)] + g[_rk(w)]) & M64),
    "sub.w": (0x00110000, 0xFFFF8000,
              lambda w, g: sext(g[_rj(w)] - g[_rk(w)], 32) & M64),
    "slli.d": (0x00410000, 0xFFFF0000, lambda w, g: (g[_rj(w)] << ((w >> 10) & 63)) & M64),
    "srai.d": (0x00490000, 0xFFFF0000,
               lambda w, g: (sext(g[_rj(w)], 64) >> ((w >> 10) & 63)) & M64),
    "rotri.d": (0x004D0000, 0xFFFF0000, lambda w, g: _rotr(g[_rj(w)], (w >> 10) & 63)),
    "bstrpick.d": (0x00C00000, 0xFFC00000,
                   lambda w, g: (g[_rj(w)] >> ((w >> 10) & 63))
                   & ((1 << (((w >> 16) & 63) - ((w >> 10) & 63) + 1)) - 1)),
    "bytepick.d": (0x000C0000, 0xFFFC0000,
                   lambda w, g: _bytepick_d(g[_rj(w)], g[_rk(w)], (w >> 15) & 7)),
    "revh.d": (0x00004400, 0xFFFFFC00, lambda w, g: _revh_d(g[_rj(w)])),
}


@pytest.mark.parametrize("kind", sorted(SIMPLE))
def test_recompute_simple_kind(kind: str) -> None:
    opcode, mask, compute = SIMPLE[kind]
    recs = by_kind(kind)
    assert len(recs) >= 6
    for rec in recs:
        (word,) = (int(w, 16) for w in rec["words"])
        assert word & mask == opcode, rec["asm"]
        before, after = regs(rec["before"]), regs(rec["after"])
        expected = dict(before)
        rd = word & 31
        if rd:
            expected[rd] = compute(word, before)
        assert after == expected, rec["asm"]
        assert int(rec["after"]["pc"], 16) == int(rec["pc"], 16) + 4


def test_sub_w_really_exercises_sign_extension() -> None:
    results = [regs(rec["after"])[int(rec["words"][0], 16) & 31] for rec in by_kind("sub.w")]
    assert any(v >> 63 for v in results) and any(v and not v >> 31 for v in results)


def test_sc_succeeds_and_stores() -> None:
    for kind, size in (("sc.w", 4), ("sc.d", 8)):
        for rec in by_kind(kind):
            ll_word, sc_word = (int(w, 16) for w in rec["words"])
            assert ll_word >> 24 == (sc_word >> 24) ^ 1  # ll.w/sc.w, ll.d/sc.d
            before, after = regs(rec["before"]), regs(rec["after"])
            rd = sc_word & 31
            assert after[rd] == 1
            data = before[rd]
            if rd == ll_word & 31:  # sc stores what ll just loaded
                continue
            offset = sext((sc_word >> 10) & 0x3FFF, 14) * 4
            addr = (before[(sc_word >> 5) & 31] + offset) & M64
            area = rec["after"]["mem"][0]
            start = addr - int(area["addr"], 16)
            got = bytes.fromhex(area["hex"])[start:start + size]
            assert got == (data & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
