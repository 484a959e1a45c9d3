"""Random riscv64 snippets from the committed encoding pool, probed at a random instruction,
end in the same register and memory state as unprobed (property (b) of the foundation).

Snippets mix straight-line records (standard and compressed) with forward branches (BEQ..
BGEU, JAL, C.J, C.BEQZ/C.BNEZ, and AUIPC-fed JALR/C.JR/C.JALR); AUIPC-fed loads and stores
are aimed at the data buffer, as the pool's manifest prescribes.  Compared: x1-x31, pc,
f0-f31, fcsr, the data buffer, the stack, and that the probe's hits equal the unprobed
execution count of the probed instruction.  Each example runs at one of two bases, drawn:
the low ``CODE`` or the kernel text address (0xffffffff80200000); data and stack sit at fixed
offsets from it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from kprobe_ref.sim import Machine
from tests.helpers import CODE, KERNEL_TEXT, run_to_end

POOL = Path(__file__).parents[1] / "vectors" / "riscv64" / "pool.jsonl"
RECORDS = [json.loads(line) for line in POOL.read_text().splitlines()]
STRAIGHT = [r for r in RECORDS if not r["class"].endswith("_branch")]
BRANCHES = [r for r in RECORDS if r["class"].endswith("_branch")]

CODE_BASES = (CODE, KERNEL_TEXT["riscv64"])
DATA_OFF, STACK_OFF = 0x20_0000, 0x30_0000  # data and stack pages, from the code base
LIT_TARGET_OFF = DATA_OFF + 0x400
BASE_REGS = {"s0": 0, "s1": 0x800, "s2": 0, "s3": 0x800}  # offsets into the data page
GPRS = ("ra", "gp", "tp", "t0", "t1", "t2", "a0", "a1", "a2", "a3", "a4", "a5", "a6", "a7",
        "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11", "t3", "t4", "t5", "t6")  # fmt: skip
REACH = {"b": 4096, "j": 1 << 20, "cj": 2048, "cb": 256, "hi20_lo12i": 1 << 31}


@dataclass(frozen=True)
class Item:
    record: dict[str, object]
    skip: int = 0


def _b(v: int, hi: int, lo: int) -> int:
    return (v >> lo) & ((1 << (hi - lo + 1)) - 1)


def _patch(parts: list[bytes], kind: str, part: int, off: int) -> None:
    """Set the PC-relative field of ``kind`` in ``parts[part]`` (and the low part)."""
    w = int.from_bytes(parts[part], "little")
    if kind == "b":
        w = (w & ~0xFE000F80) | (_b(off, 12, 12) << 31 | _b(off, 10, 5) << 25
                                 | _b(off, 4, 1) << 8 | _b(off, 11, 11) << 7)
    elif kind == "j":
        w = (w & 0xFFF) | (_b(off, 20, 20) << 31 | _b(off, 10, 1) << 21
                           | _b(off, 11, 11) << 20 | _b(off, 19, 12) << 12)
    elif kind == "cj":
        w = (w & ~0x1FFC) | (_b(off, 11, 11) << 12 | _b(off, 4, 4) << 11 | _b(off, 9, 8) << 9
                             | _b(off, 10, 10) << 8 | _b(off, 6, 6) << 7 | _b(off, 7, 7) << 6
                             | _b(off, 3, 1) << 3 | _b(off, 5, 5) << 2)
    elif kind == "cb":
        w = (w & ~0x1C7C) | (_b(off, 8, 8) << 12 | _b(off, 4, 3) << 10 | _b(off, 7, 6) << 5
                             | _b(off, 2, 1) << 3 | _b(off, 5, 5) << 2)
    else:
        hi = (off + 0x800) >> 12
        lo = off - (hi << 12)
        w = (w & 0xFFF) | ((hi & 0xFFFFF) << 12)
        lw = int.from_bytes(parts[part + 1], "little")
        if kind == "hi20_lo12i":
            lw = (lw & 0xFFFFF) | ((lo & 0xFFF) << 20)
        else:
            lw = (lw & 0x01FFF07F) | (_b(lo, 11, 5) << 25) | (_b(lo, 4, 0) << 7)
        parts[part + 1] = lw.to_bytes(4, "little")
    parts[part] = w.to_bytes(len(parts[part]), "little")


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
        addrs = [starts[i] + sum(len(p) for p in parts[:k]) for k in range(len(parts))]
        kind = r["rel_kind"]
        if kind is not None:
            pc = addrs[int(str(r["rel_from"]))]
            if str(r["class"]).endswith("_branch"):
                j = min(i + 1 + it.skip, len(items))
                target = starts[j] if j < len(items) else end
                if target - pc >= REACH[str(kind)]:
                    # out of reach (c.beqz/c.bnez: +-256 B): branch to the next record
                    target = starts[i] + len(b"".join(parts))
            else:
                target = base + LIT_TARGET_OFF
            _patch(parts, str(kind), int(str(r["rel_part"])), target - pc)
        insns.extend(addrs)
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
    "f": st.lists(st.integers(0, (1 << 64) - 1), min_size=32, max_size=32),
    "data": st.binary(min_size=64, max_size=64),
})  # fmt: skip


def _run(code: bytes, base: int, state: dict[str, object], probe_at: int | None,
         watch: int | None = None) -> tuple[object, ...]:
    m = Machine("riscv64")
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
    for r, v in BASE_REGS.items():
        regs.set(r, data_at + v)
    regs.set("sp", stack_at + 0x1000)
    m.set_regs(regs)
    for i, v in enumerate(state["f"]):  # type: ignore[arg-type]
        m.cpu.reg_write(f"f{i}", v)
    m.cpu.reg_write("fcsr", 0)
    pc, executed = run_to_end(m, base, code, probe_at, watch)
    fp = (*(m.cpu.reg_read(f"f{i}") for i in range(32)), m.cpu.reg_read("fcsr"))
    return (pc, m.regs().as_dict(), fp, m.read(data_at, 0x1000), m.read(stack_at, 0x2000),
            executed)


@given(items=items_st, state=state_st, pick=st.integers(0, 1 << 16),
       base=st.sampled_from(CODE_BASES))
def test_random_snippet_probed_at_random_instruction(
    items: list[Item], state: dict[str, object], pick: int, base: int
) -> None:
    code, insns = assemble(items, base)
    probe_at = insns[pick % len(insns)]
    plain = _run(code, base, state, None, watch=probe_at)
    probed = _run(code, base, state, probe_at)
    assert probed[0] == plain[0], "final pc"
    assert probed[1] == plain[1], "general registers, pc"
    assert probed[2] == plain[2], "f0-f31, fcsr"
    assert probed[3] == plain[3], "data buffer"
    assert probed[4] == plain[4], "stack"
    assert probed[5] == plain[5], "hits differ from unprobed executions"
