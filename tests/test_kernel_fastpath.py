"""The whole-image fast path agrees with ``check_probe`` on every bundled instruction.

- Every function of every bundled corpus image, through the machine's real
  ``check_probe`` (``kprobe_ref.tools.kernel_audit.fastpath.disagreements``), with and without a
  blacklist on the machine.
- Every encoding of the committed instruction pools, each ISA's verdict cache against its
  own ``decode`` (in two orders, so each key is filled once by each of two encodings where
  the pool has several); and a coarser x86 key is caught by the same check.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from kprobe_ref.arch import ARCHES, get_arch
from kprobe_ref.kernel.blacklist import Blacklist
from kprobe_ref.tools.kernel_audit.fastpath import FastPath, disagreements
from kprobe_ref.tools.verify import Runner, bundled_image

VECTORS = Path(__file__).resolve().parent / "vectors"


@pytest.mark.parametrize("kind", ["kernel", "user"])
@pytest.mark.parametrize("isa", sorted(ARCHES))
def test_fast_path_equals_check_probe_on_the_corpus(isa: str, kind: str) -> None:
    r = Runner(isa, bundled_image(isa, kind))
    fast = FastPath(isa)
    bad, seen = [], 0
    for name, start in sorted(r.image.functions.items(), key=lambda kv: kv[1]):
        code = r.m.read(start, r.image.sizes[name])
        bad += disagreements(fast, r.m.manager, code, start, None)
        seen += len(fast.starts(code, start)[0])
    assert seen > 50
    assert bad == []


@pytest.mark.parametrize("isa", sorted(ARCHES))
def test_fast_path_equals_check_probe_under_a_blacklist(isa: str) -> None:
    r = Runner(isa, bundled_image(isa))
    funcs = sorted(r.image.functions.items(), key=lambda kv: kv[1])
    (_, a), (_, b) = funcs[0], funcs[len(funcs) // 2]
    sized = [(s, r.image.sizes[n]) for n, s in funcs]
    site = sized[1][0] + (sized[1][1] // 2) // 4 * 4
    starts = r.instructions(funcs[1][0])
    site = min(starts, key=lambda x: abs(x - site))  # an instruction start
    bl = Blacklist(starts=[a, b], ends=[a + r.image.sizes[funcs[0][0]], b + 4],
                   causes=["nokprobe", "noinstr-text"], sites={site: "jump-label"})
    r.m.kprobe_blacklist = bl
    fast = FastPath(isa)
    bad, refused = [], 0
    for start, size in sized:
        code = r.m.read(start, size)
        bad += disagreements(fast, r.m.manager, code, start, bl)
        refused += sum(1 for i in fast.function(code, start, bl)[0]
                       if i[4].startswith("blacklisted:"))
    assert bad == []
    assert refused >= 3


def _pool(isa: str) -> list[bytes]:
    files = sorted((VECTORS / isa).glob("*.jsonl"))
    out = []
    for f in files:
        for line in f.read_text().splitlines():
            rec = json.loads(line)
            if "words" in rec:  # loongarch64 vectors: 32-bit words
                out += [int(w, 16).to_bytes(4, "little") for w in rec["words"]]
                continue
            for part in rec.get("parts") or [rec["hex"]]:
                out.append(bytes.fromhex(part))
    return out


def _decoded(isa: str, raw: bytes) -> tuple[str, str, str]:
    d = get_arch(isa).decode(raw, 0x1000, False)
    return d.verdict.value, d.klass, d.reason


@pytest.mark.parametrize("isa", sorted(ARCHES))
def test_verdict_cache_equals_decode_on_the_pools(isa: str) -> None:
    pool = _pool(isa)
    assert len(pool) > 100
    classify = importlib.import_module(f"kprobe_ref.arch.{isa}.decode").classify
    for order in (pool, pool[::-1]):
        fast = FastPath(isa)
        for raw in order:
            want = _decoded(isa, raw)
            assert fast.verdict(raw, 0x1000) == want, raw.hex()
            v, k, why = classify(raw)
            assert (v.value, k, why) == want, raw.hex()


def test_a_coarser_x86_key_is_caught() -> None:
    """Keying x86 verdicts by the opcode alone (dropping ModRM) mixes up FF /2 (call),
    FF /4 (jmp), FF /0 (inc), and RIP-relative with plain operands: the pool check fails."""
    from kprobe_ref.arch.x86_64 import encoding

    fast = FastPath("x86_64")
    fast.key = lambda raw: raw[: encoding.opcode_position(raw)[3] + 1]
    wrong = 0
    for order in (_pool("x86_64"), _pool("x86_64")[::-1]):
        fast.cache.clear()
        wrong += sum(fast.verdict(raw, 0x1000) != _decoded("x86_64", raw) for raw in order)
    assert wrong > 0


def test_ud1_takes_its_modrm_operand() -> None:
    """``0F B9 CC`` (``ud1 %esp, %ecx``, Linux's static-call trampolines) is 3 bytes, as
    binutils and the SDM decode it, in the one-at-a-time decoder and the bulk path alike."""
    arch = get_arch("x86_64")
    code = bytes.fromhex("e9fb1b20ff0fb9cc") + bytes.fromhex("0fff442408") + b"\x90"
    assert arch.insn_length(code[5:], 0) == 3
    assert arch.decode(code[5:], 0, False).raw == bytes.fromhex("0fb9cc")
    assert arch.decode(code[8:], 0, False).raw == bytes.fromhex("0fff442408")
    starts, stuck = FastPath("x86_64").starts(code, 0)
    assert starts == [(0, 5), (5, 3), (8, 5), (13, 1)] and stuck is None
    assert FastPath("x86_64").starts(code[:6], 0) == ([(0, 5)], 5)
