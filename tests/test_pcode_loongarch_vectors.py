"""Replays the qemu-generated LoongArch vectors (tests/vectors/loongarch64) on PcodeCpu."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kprobe_ref.sim.cpu import StopKind
from kprobe_ref.sim.pcode import PAGE_SIZE, PcodeCpu

VECTORS = Path(__file__).parent / "vectors" / "loongarch64"
FILES = sorted(VECTORS.glob("*.jsonl"))

pytestmark = pytest.mark.skipif(
    not FILES, reason="no LoongArch vectors yet: tests/vectors/loongarch64/*.jsonl is empty"
)


def _records() -> list[Any]:
    out = []
    for path in FILES:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                rec = json.loads(line)
                out.append(pytest.param(rec, id=f"{path.stem}:{n}:{rec['kind']}"))
    return out


def _pages(addr: int, size: int) -> set[int]:
    return set(range(addr // PAGE_SIZE, (addr + size + PAGE_SIZE - 1) // PAGE_SIZE))


def _setup(rec: dict[str, Any]) -> tuple[PcodeCpu, int]:
    cpu = PcodeCpu("loongarch64")
    pc = int(rec["pc"], 16)
    before = rec["before"]
    code_pages = _pages(pc, 4 * len(rec["words"]))
    data_pages: set[int] = set()
    for m in before["mem"] + rec["after"]["mem"]:
        data_pages |= _pages(int(m["addr"], 16), len(m["hex"]) // 2)
    for page in code_pages | data_pages:
        perms = ("rx" if page in code_pages else "") + ("w" if page in data_pages else "")
        cpu.map(page * PAGE_SIZE, PAGE_SIZE, "r" + perms.replace("r", ""))
    code = b"".join(int(w, 16).to_bytes(4, "little") for w in rec["words"])
    cpu.mem_write(pc, code)
    for m in before["mem"]:
        cpu.mem_write(int(m["addr"], 16), bytes.fromhex(m["hex"]))
    for name, value in before["regs"].items():
        cpu.reg_write(name, int(value, 16))
    for i, flag in enumerate(before["fcc"]):
        cpu.reg_write(f"fcc{i}", flag)
    return cpu, pc


def _state(cpu: PcodeCpu, rec: dict[str, Any], pc: int) -> dict[str, Any]:
    after = rec["after"]
    return {
        "regs": {n: f"{cpu.reg_read(n):#018x}" for n in after["regs"]},
        "fcc": [cpu.reg_read(f"fcc{i}") for i in range(8)],
        "pc": f"{pc:#018x}",
        "mem": [
            {"addr": m["addr"], "hex": cpu.mem_read(int(m["addr"], 16), len(m["hex"]) // 2).hex()}
            for m in after["mem"]
        ],
    }


def _expected(rec: dict[str, Any]) -> dict[str, Any]:
    after = rec["after"]
    return {
        "regs": {n: f"{int(v, 16):#018x}" for n, v in after["regs"].items()},
        "fcc": list(after["fcc"]),
        "pc": f"{int(after['pc'], 16):#018x}",
        "mem": [{"addr": m["addr"], "hex": m["hex"].lower()} for m in after["mem"]],
    }


@pytest.mark.parametrize("rec", _records())
def test_vector_matches_qemu(rec: dict[str, Any]) -> None:
    cpu, pc = _setup(rec)
    end = int(rec["after"]["pc"], 16)
    stop = cpu.run(pc, frozenset({end}) if end != pc else frozenset(), len(rec["words"]))
    assert stop.kind in (StopKind.STOP_AT, StopKind.STEP_LIMIT), stop
    assert _state(cpu, rec, stop.pc) == _expected(rec), rec["asm"]
