"""The proof suite runs and proves everything; the proof commands; the x86 displacement
rewrite touches only the field capstone locates."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import capstone
import pytest

from kprobe_ref.arch.x86_64 import decode as x86_decode
from kprobe_ref.arch.x86_64.slot import rewrite_displacement
from kprobe_ref.bits import to_signed
from kprobe_ref.proofs.runner import all_obligations, isas, run

POOL = Path(__file__).parent / "vectors" / "x86_64" / "pool.jsonl"


@pytest.mark.slow
def test_every_obligation_of_every_isa_is_proved() -> None:
    obligations = all_obligations()
    results = run(obligations)
    failed = [(o.isa, o.kind, o.klass, r.detail) for o, r in zip(obligations, results,
                                                                 strict=True) if not r.proved]
    assert failed == []
    kinds = {(o.isa, o.kind) for o in obligations}
    for isa in isas():
        assert {(isa, "decode-disjoint"), (isa, "decode-model"), (isa, "simulate"),
                (isa, "breakpoint"), (isa, "slot")} <= kinds


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kprobe_ref", *args], capture_output=True,
                          text=True, timeout=300, check=False)


def test_prove_x86_json_parses_and_counts_every_kind() -> None:
    out = _cli("prove", "--arch", "x86_64", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert all(o["proved"] for o in data["obligations"])
    kinds = {c["kind"] for c in data["counts"]}
    assert {"decode-disjoint", "decode-model", "simulate", "relocate", "relocate-necessity",
            "breakpoint", "slot"} <= kinds


def test_reloc_on_a_jcc_is_proved() -> None:
    out = _cli("reloc", "--arch", "x86_64", "--bytes", "7405", "--addr", "0x401000")
    assert out.returncode == 0
    assert "jcc_rel8" in out.stdout and "proved for all register states" in out.stdout


def test_reloc_on_rip_relative_mov_with_far_slot_is_an_expected_refusal() -> None:
    out = _cli("reloc", "--arch", "x86_64", "--bytes", "0x488b0500001000", "--addr",
               "0x401000", "--slot", "0x7fff00000000")
    assert out.returncode == 0, out.stdout
    assert "expected refusal" in out.stdout and "OutOfReach" in out.stdout
    assert "displacement +0x100000 -> -0x7ffeffaff000" in out.stdout
    assert "counterexample" not in out.stdout


def test_reloc_on_rip_relative_mov_with_near_slot_is_proved() -> None:
    out = _cli("reloc", "--arch", "x86_64", "--bytes", "488b0500001000", "--addr", "0x401000",
               "--slot", "0x402000")
    assert out.returncode == 0 and "proved for all register states" in out.stdout


def test_reloc_on_a_loongarch_jirl_is_proved() -> None:
    # jirl ra, ra, 8: the target reads ra before the link is written.
    out = _cli("reloc", "--arch", "loongarch64", "--bytes", "2108004c", "--addr",
               "0x9000000000401000")
    assert out.returncode == 0, out.stdout
    assert "jirl" in out.stdout and "proved for all register states" in out.stdout


def test_reloc_on_an_undecodable_byte_says_rejected() -> None:
    out = _cli("reloc", "--arch", "x86_64", "--bytes", "06", "--addr", "0x1000")
    assert out.returncode == 0 and "reject" in out.stdout and "undecodable" in out.stdout


@pytest.mark.parametrize("isa", ["x86_64", "aarch64", "riscv64", "loongarch64"])
def test_reloc_asm_assembles_with_the_bundled_toolchain(isa: str) -> None:
    text = {"x86_64": "jmp .+16", "aarch64": "adr x0, .+16", "riscv64": "auipc a0, 1",
            "loongarch64": "pcaddu12i $a0, 1"}[isa]
    out = _cli("reloc", "--arch", isa, "--asm", text, "--addr", "0x401000")
    assert out.returncode == 0, out.stderr
    assert "simulate" in out.stdout and "proved for all register states" in out.stdout


@pytest.mark.parametrize("args", [
    ("--arch", "aarch64", "--bytes", "80000010", "--addr", "0x401002"),
    ("--arch", "loongarch64", "--bytes", "2108004c", "--addr", "0x401001"),
    ("--arch", "x86_64", "--bytes", "740590", "--addr", "0x401000"),
    ("--arch", "x86_64", "--asm", "no_such_mnemonic", "--addr", "0x401000"),
    ("--arch", "x86_64", "--asm", "call somewhere", "--addr", "0x401000"),
    ("--arch", "x86_64", "--bytes", "zz", "--addr", "1"),
    ("--arch", "mips", "--bytes", "90", "--addr", "1"),
    ("--arch", "x86_64", "--bytes", "90", "--addr", "nowhere"),
])
def test_reloc_bad_input_is_one_line_and_status_2(args: tuple[str, ...]) -> None:
    out = _cli("reloc", *args)
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1


def _capstone_disp(code: bytes) -> tuple[int, int, str]:
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    md.detail = True
    ins = next(md.disasm(code, 0))
    return int(ins.disp_offset), int(ins.size), ins.mnemonic


def _rip_records() -> list[bytes]:
    out = []
    for line in POOL.read_text().splitlines():
        code = bytes.fromhex(json.loads(line)["hex"])
        d = x86_decode.decode(code, 0x40_0000)
        if "disp_offset" in d.fields:
            out.append(d.raw)
    return out


def test_rewrite_displacement_changes_only_the_field_capstone_locates() -> None:
    records = _rip_records()
    assert records
    rng = random.Random(7)
    cases = [(raw, rng.getrandbits(46), rng.randint(-(1 << 30), 1 << 30)) for raw in records]
    cases += [(rng.choice(records), rng.getrandbits(46), rng.randint(-(1 << 31), 1 << 31))
              for _ in range(3000)]
    cases += [(rng.choice(records), rng.getrandbits(46) + (1 << 33),  # beyond reach
               rng.choice((-1, 1)) * rng.randint(1 << 32, 1 << 33)) for _ in range(300)]
    outcomes = {True: 0, False: 0}
    for raw, addr, delta in cases:
        slot = addr + delta
        off, size, mnemonic = _capstone_disp(raw)
        old = to_signed(int.from_bytes(raw[off:off + 4], "little"), 32)
        fits = -(1 << 31) <= old + addr - slot < (1 << 31)
        outcomes[fits] += 1
        if not fits:  # refused, never wrapped
            with pytest.raises(OverflowError):
                rewrite_displacement(raw, off, addr, slot)
            continue
        out = rewrite_displacement(raw, off, addr, slot)
        assert len(out) == len(raw) == size
        assert out[:off] == raw[:off] and out[off + 4:] == raw[off + 4:]
        new = to_signed(int.from_bytes(out[off:off + 4], "little"), 32)
        assert slot + size + new == addr + size + old
        assert _capstone_disp(out)[2] == mnemonic
    assert outcomes[True] and outcomes[False], outcomes
