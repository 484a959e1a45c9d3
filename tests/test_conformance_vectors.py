"""Conformance vectors: the committed files, their regeneration, the C port that consumes
them, and the checks that stop a wrong rule from producing a vector."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kprobe_ref.arch import ARCHES
from kprobe_ref.arch.x86_64 import simulate as x86_simulate
from kprobe_ref.arch.x86_64 import slot as x86_slot
from kprobe_ref.tools.cli import main
from kprobe_ref.tools.conformance import SCHEMA_VERSION
from kprobe_ref.tools.conformance import export as export_module
from kprobe_ref.tools.conformance.cases import candidates
from kprobe_ref.tools.conformance.check import Candidate, Checker, CheckFailed, vectors_for
from kprobe_ref.tools.conformance.export import coverage
from kprobe_ref.tools.conformance.kret import kretprobe_vectors
from kprobe_ref.tools.conformance.schema import parse_record, read_records

ROOT = Path(__file__).resolve().parents[1]
VECTORS = ROOT / "tests" / "vectors" / "conformance"
CONSUMER = ROOT / "conformance" / "c" / "consumer.c"
SAMPLE = int(os.environ.get("CONFORMANCE_SAMPLE", "14"))
"""Candidates regenerated per ISA by the sample test (all of them with a large value)."""


def _lines(isa: str) -> list[str]:
    return (VECTORS / f"{isa}.jsonl").read_text().splitlines()


def _without_id(record: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in record.items() if k != "id"}, sort_keys=True)


def test_manifest_names_every_file_with_its_hash_and_count() -> None:
    manifest = json.loads((VECTORS / "manifest.json").read_text())
    assert manifest["schema"] == SCHEMA_VERSION
    assert set(manifest["files"]) == {f"{isa}.jsonl" for isa in ARCHES}
    for name, entry in manifest["files"].items():
        data = (VECTORS / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], name
        assert data.count(b"\n") == entry["records"]


@pytest.mark.parametrize("isa", sorted(ARCHES))
def test_committed_vectors_parse_and_cover_every_row_and_reason(isa: str) -> None:
    records = read_records(_lines(isa))
    assert {r["isa"] for r in records} == {isa}
    assert len({r["id"] for r in records}) == len(records)
    cov = coverage(isa, records)
    assert not cov.missing_rows
    assert not cov.missing_reasons
    assert cov.kretprobes >= 2
    assert any(r["user"] for r in records) and any(not r["user"] for r in records)


@pytest.mark.parametrize("isa", sorted(ARCHES))
def test_conditional_rows_have_taken_and_fallthrough_vectors(isa: str) -> None:
    taken: dict[str, set[bool]] = {}
    for r in read_records(_lines(isa)):
        if r["kind"] == "kprobe" and r["reason"] in ("branch-relative", "branch-counted"):
            pc = next(v for k, v in r["post"].regs.items() if k in ("rip", "pc", "epc",
                                                                     "csr_era"))
            taken.setdefault(r["row"], set()).add(pc == r["addr"] + len(r["bytes"]))
    conditional = {row for row in taken if row not in ("b", "jmp_rel8", "jmp_rel32", "c_j")}
    assert conditional
    for row in conditional:
        assert taken[row] == {True, False}, row


@pytest.mark.parametrize("isa", sorted(ARCHES))
def test_a_sample_of_candidates_regenerates_exactly_the_committed_vectors(isa: str) -> None:
    committed = {_without_id(json.loads(line)) for line in _lines(isa)}
    every = list(candidates(isa))
    stride = max(1, len(every) // SAMPLE)
    checker = Checker(isa)
    produced = 0
    for cand in every[::stride]:
        for record in vectors_for(checker, cand):
            produced += 1
            assert _without_id(record) in committed, (cand.row, cand.case)
    assert produced >= SAMPLE // 2


@pytest.mark.parametrize("isa", sorted(ARCHES))
def test_kretprobe_vectors_regenerate(isa: str) -> None:
    committed = {_without_id(json.loads(line)) for line in _lines(isa)
                 if '"kind":"kretprobe"' in line}
    assert {_without_id(r) for r in kretprobe_vectors(isa)} == committed


def test_a_wrong_simulation_rule_yields_no_vector(monkeypatch: pytest.MonkeyPatch) -> None:
    def falls_through(s: Any, d: Any) -> None:
        s.set_pc(s.address + d.fields["len"])

    monkeypatch.setitem(x86_simulate.RULES, "jmp_rel8", falls_through)
    with pytest.raises(CheckFailed):
        list(vectors_for(Checker("x86_64"), Candidate("x86_64", "jmp_rel8", "t", b"\xeb\x10")))


def test_a_slot_without_relocation_yields_no_vector(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(x86_slot, "rewrite_displacement", lambda raw, off, addr, slot: raw)
    cand = Candidate("x86_64", "rip_relative", "t", bytes.fromhex("488b0500100000"))
    with pytest.raises(CheckFailed):
        list(vectors_for(Checker("x86_64"), cand))


def test_a_record_of_another_schema_is_refused() -> None:
    line = _lines("riscv64")[0].replace(f'"schema":{SCHEMA_VERSION}', '"schema":999')
    with pytest.raises(ValueError, match="schema"):
        parse_record(line)


def test_export_prints_counts_and_fails_on_incomplete_coverage(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    full = export_module.generate
    monkeypatch.setattr(export_module, "generate", lambda isa: full(isa, limit=3))
    assert main(["vectors", "export", "--arch", "riscv64", "--out", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "riscv64: " in out and "row jal: " in out and "rows without a vector" in out
    assert read_records((tmp_path / "riscv64.jsonl").read_text().splitlines())


def test_export_to_a_file_is_bad_input(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "file"
    target.write_text("")
    assert main(["vectors", "export", "--arch", "x86_64", "--out", str(target)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a directory" in err


@pytest.fixture(scope="module")
def consumer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    exe = tmp_path_factory.mktemp("consumer") / "consumer"
    subprocess.run([sys.executable, "-m", "ziglang", "cc", "-O1", "-Wall", "-Werror",
                    "-o", str(exe), str(CONSUMER)], check=True)
    return exe


def test_the_c_port_passes_every_x86_vector_it_implements(consumer: Path) -> None:
    run = subprocess.run([str(consumer), str(VECTORS / "x86_64.jsonl")], capture_output=True,
                         text=True)
    assert run.returncode == 0, run.stdout[-2000:]
    checked, skipped, failed = (int(w) for w in run.stdout.split()[-5::2])
    assert failed == 0 and skipped == 0 and checked >= 300


def test_a_port_that_steps_everything_unchanged_fails_the_pc_relative_vectors(
        consumer: Path) -> None:
    run = subprocess.run([str(consumer), "--unchanged", str(VECTORS / "x86_64.jsonl")],
                         capture_output=True, text=True)
    assert run.returncode == 1
    failed_rows = {line.split("(")[1].split()[0] for line in run.stdout.splitlines()
                   if line.startswith("FAIL")}
    assert {"rip_relative", "jcc_rel8", "call_rel32", "ret", "jmp_ind_mem", "loop",
            "int3"} <= failed_rows
    assert "plain" not in failed_rows
