"""Random aarch64 snippets from the committed encoding pool, probed at a random instruction,
end in the same register and memory state as unprobed (property (b) of the foundation).

Snippets mix straight-line records with forward branches (B, BL, B.cond, CBZ/CBNZ,
TBZ/TBNZ, and ADR-fed BR/BLR/RET); literal loads and ADR/ADRP-fed loads are aimed at the
data buffer, as the pool's manifest prescribes.  Compared: x0-x30, sp, pc, NZCV, q0-q31,
FPSR, the data buffer, the stack, and that the probe's hits equal the unprobed execution
count of the probed instruction.  Each example runs at one of two bases, drawn: the low
``CODE`` or the kernel text address (0xffff800008000000); data and stack sit at fixed offsets
from it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from kprobe_ref.sim import Machine
from tests.helpers import CODE, KERNEL_TEXT, run_to_end

POOL = Path(__file__).parents[1] / "vectors" / "aarch64" / "pool.jsonl"
RECORDS = [json.loads(line) for line in POOL.read_text().splitlines()]
STRAIGHT = [r for r in RECORDS if not r["class"].endswith("_branch")]
BRANCHES = [r for r in RECORDS if r["class"].endswith("_branch")]

BASES = (CODE, KERNEL_TEXT["aarch64"])
DATA_OFF, STACK_OFF = 0x8_0000, 0x30_0000
"""From the code base: the data buffer lies within the +-1 MiB reach of LDR (literal) and ADR
from the code."""
LIT_TARGET_OFF = DATA_OFF + 0x400
GPRS = tuple(f"x{i}" for i in range(31) if i not in (19, 20, 21))
REL_FIELDS = {"imm26": (0, 26), "imm19": (5, 19), "imm14": (5, 14)}


@dataclass(frozen=True)
class Item:
    record: dict[str, object]
    skip: int = 0


def _patch(word: int, kind: str, offset: int, pc: int) -> int:
    if kind in REL_FIELDS:
        lo, width = REL_FIELDS[kind]
        mask = ((1 << width) - 1) << lo
        return (word & ~mask) | (((offset >> 2) << lo) & mask)
    value = offset if kind == "adr" else ((pc + offset) >> 12) - (pc >> 12)
    return (word & ~((3 << 29) | (0x7FFFF << 5))) | ((value & 3) << 29) | (
        ((value >> 2) & 0x7FFFF) << 5)


def assemble(items: list[Item], base: int) -> tuple[bytes, list[int]]:
    """Lay the records out from ``base``; returns the code and every instruction's address."""
    starts, at = [], base
    for it in items:
        starts.append(at)
        at += int(str(it.record["len"]))
    end = at
    code, insns = bytearray(), []
    for i, it in enumerate(items):
        r = it.record
        parts = [bytes.fromhex(p) for p in r["parts"]]  # type: ignore[attr-defined]
        here = starts[i]
        kind = r["rel_kind"]
        if kind is not None:
            if str(r["class"]).endswith("_branch"):
                j = min(i + 1 + it.skip, len(items))
                target = starts[j] if j < len(items) else end
            else:
                target = base + (DATA_OFF if kind == "adrp" else LIT_TARGET_OFF)
            part, pc = int(str(r["rel_part"])), here + 4 * int(str(r["rel_from"]))
            word = int.from_bytes(parts[part], "little")
            parts[part] = _patch(word, str(kind), target - pc, pc).to_bytes(4, "little")
        insns.extend(here + 4 * k for k in range(len(parts)))
        code += b"".join(parts)
    return bytes(code), insns


items_st = st.lists(
    st.one_of(
        st.sampled_from(STRAIGHT).map(Item),
        st.builds(Item, st.sampled_from(BRANCHES), st.integers(0, 4)),
    ),
    min_size=1,
    max_size=10,
)
state_st = st.fixed_dictionaries({
    **{r: st.integers(0, (1 << 64) - 1) for r in GPRS},
    "nzcv": st.integers(0, 15),
    "q": st.lists(st.integers(0, (1 << 128) - 1), min_size=32, max_size=32),
    "data": st.binary(min_size=64, max_size=64),
})  # fmt: skip


def _run(code: bytes, base: int, state: dict[str, object], probe_at: int | None,
         watch: int | None = None) -> tuple[object, ...]:
    m = Machine("aarch64")
    data_at, stack_at = base + DATA_OFF, base + STACK_OFF
    m.map(base, 0x1000 + len(code), "rx")
    m.write(base, code)
    m.add_symbol("snippet", base, len(code))
    m.map(data_at, 0x1000, "rw")
    m.map(stack_at, 0x2000, "rw")
    m.write(data_at, bytes(state["data"]) * 64)  # type: ignore[arg-type]
    regs = m.arch.regs_class()
    for r in GPRS:
        regs.set(r, int(str(state[r])))
    regs.set("x19", data_at)
    regs.set("x20", data_at + 0x800)
    regs.set("x21", data_at + 0x800)
    regs.sp = stack_at + 0x1000
    regs.pstate = int(str(state["nzcv"])) << 28
    m.set_regs(regs)
    for i, v in enumerate(state["q"]):  # type: ignore[arg-type]
        m.cpu.reg_write(f"q{i}", v)
    m.cpu.reg_write("fpcr", 0)
    m.cpu.reg_write("fpsr", 0)
    pc, executed = run_to_end(m, base, code, probe_at, watch)
    fp = (*(m.cpu.reg_read(f"q{i}") for i in range(32)), m.cpu.reg_read("fpsr"))
    return (pc, m.regs().as_dict(), fp, m.read(data_at, 0x1000), m.read(stack_at, 0x2000),
            executed)


@given(items=items_st, state=state_st, pick=st.integers(0, 1 << 16),
       base=st.sampled_from(BASES))
def test_random_snippet_probed_at_random_instruction(
    items: list[Item], state: dict[str, object], pick: int, base: int
) -> None:
    code, insns = assemble(items, base)
    probe_at = insns[pick % len(insns)]
    plain = _run(code, base, state, None, watch=probe_at)
    probed = _run(code, base, state, probe_at)
    assert probed[0] == plain[0], "final pc"
    assert probed[1] == plain[1], "general registers, sp, pc, nzcv"
    assert probed[2] == plain[2], "q0-q31, fpsr"
    assert probed[3] == plain[3], "data buffer"
    assert probed[4] == plain[4], "stack"
    assert probed[5] == plain[5], "hits differ from unprobed executions"
