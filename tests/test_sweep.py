"""The encoding sweep: our verdicts as ``decode``/``check_probe`` give them, SLEIGH's view,
patterns, checkpoints and resume, the CLI, and the same slice on a Dask scheduler with two
workers started here (loopback only)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kprobe_ref.arch import get_arch
from kprobe_ref.errors import KprobeError
from kprobe_ref.manager import check_probe
from kprobe_ref.tools.cli import main
from kprobe_ref.tools.sweep import ours, patterns, report, shard, sleigh, vendor
from kprobe_ref.tools.sweep.plan import plan
from tests.helpers import CODE, snippet_machine

ROOT = Path(__file__).resolve().parent.parent

SLICES = [
    ("aarch64", 32, 0x1400_0000), ("aarch64", 32, 0x5400_0000), ("aarch64", 32, 0xD503_2000),
    ("aarch64", 32, 0xD61F_0000), ("aarch64", 32, 0x5800_0000), ("aarch64", 32, 0x1000_0000),
    ("riscv64", 32, 0x0000_0000), ("riscv64", 32, 0x0010_0000), ("riscv64", 16, 0x6000),
    ("riscv64", 16, 0x8000), ("riscv64", 16, 0x9000), ("loongarch64", 32, 0x002A_0000),
    ("loongarch64", 32, 0x4C00_0000), ("loongarch64", 32, 0x4800_0000),
    ("loongarch64", 32, 0x0000_0000),
]


def _bytes(w: int, width: int) -> bytes:
    return w.to_bytes(width // 8, "little")


@pytest.mark.parametrize(("isa", "width", "lo"), SLICES)
def test_the_sweep_verdict_is_decode_for_every_word(isa: str, width: int, lo: int) -> None:
    words, rules, _, _ = shard.classify(isa, width, lo, lo + 0x1000)
    dec = get_arch(isa).decode
    for w, rule in zip(words, rules, strict=True):
        d = dec(_bytes(w, width) + b"\0\0", 0x1000, False)
        assert (d.verdict.value, d.klass, d.reason) == (rule.verdict, rule.klass, rule.reason), \
            hex(w)


@pytest.mark.parametrize("isa", ["aarch64", "riscv64", "loongarch64"])
def test_check_probe_gives_the_sweep_verdict(isa: str) -> None:
    rng = random.Random(isa)
    words = [rng.getrandbits(32) | (3 if isa == "riscv64" else 0) for _ in range(40)]
    words += [0x1400_0002, 0xD65F_03C0, 0x4C00_0020, 0x0000_0000, 0x0000_006F]
    for w in words:
        if isa == "riscv64" and w & 3 != 3:
            continue
        m = snippet_machine(isa, w.to_bytes(4, "little"), CODE)
        _, rules, _, _ = shard.classify(isa, 32, w, w + 1)
        try:
            verdict = check_probe(m.manager, m.points, CODE).decoded.verdict.value
        except KprobeError:  # UnsupportedInstruction, or riscv64 "cannot decode" (boundary)
            verdict = "reject"
        assert verdict == rules[0].verdict, hex(w)


CLASSES = [
    ("aarch64", 0x1400_0002, "branch"), ("aarch64", 0x9400_0002, "call+reads-pc"),
    ("aarch64", 0x5400_0040, "branch-cond"), ("aarch64", 0xD61F_0000, "branch-indirect"),
    ("aarch64", 0xD63F_0000, "call-indirect+reads-pc"), ("aarch64", 0xD65F_03C0, "return"),
    ("aarch64", 0x1000_0000, "reads-pc"), ("aarch64", 0x5800_0040, "reads-pc"),
    ("aarch64", 0xD503_201F, "plain"), ("aarch64", 0xD400_0001, "trap"),
    ("aarch64", 0x1400_0001, "branch-next"), ("aarch64", 0x8B02_0020, "plain"),
    ("riscv64", 0x0000_006F, "branch"), ("riscv64", 0x0040_006F, "branch-next"),
    ("riscv64", 0x0080_00EF, "call+reads-pc"),
    ("riscv64", 0x0000_8067, "return"), ("riscv64", 0x0000_0517, "reads-pc"),
    ("riscv64", 0x0000_0073, "trap"), ("riscv64", 0x00B5_0533, "plain"),
    ("loongarch64", 0x4C00_0020, "return"), ("loongarch64", 0x5000_0800, "branch"),
    ("loongarch64", 0x1C00_0004, "reads-pc"), ("loongarch64", 0x002A_0000, "trap"),
    ("loongarch64", 0xFFFF_FFFF, "undecodable"),
]


@pytest.mark.parametrize(("isa", "word", "name"), CLASSES)
def test_sleigh_classes(isa: str, word: int, name: str) -> None:
    [flags] = sleigh.SleighView(isa, 32).classify(word.to_bytes(4, "little"))
    assert sleigh.class_name(flags) == name


def test_a_pc_read_is_told_from_an_immediate_that_looks_like_the_address() -> None:
    # movz x0, #0x6a5c, lsl #48: the constant equals the batch base address's top bits
    [flags] = sleigh.SleighView("aarch64", 32).classify((0xD2ED4B80).to_bytes(4, "little"))
    assert sleigh.class_name(flags) == "plain"


def test_patterns_cover_exactly_and_disjointly() -> None:
    rng = random.Random(7)
    for _ in range(12):
        base = rng.getrandbits(12)
        ws = sorted({w for w in range(1 << 12) if (w ^ base) & rng.choice([0xF0, 0x30F, 0x801])
                     == 0 or rng.random() < 0.02})
        cubes = patterns.cover(ws, 12)
        got = sorted(w for w in range(1 << 12) for m, v in cubes if w & m == v)
        assert got == ws
    assert patterns.cover(list(range(0x100, 0x200)), 12) == [(0xF00, 0x100)]


def _mutate_c_jr(monkeypatch: pytest.MonkeyPatch) -> None:
    """Give ``c.jr`` Linux's old mask 0xf007 (rs2 unchecked)."""
    orig = ours.rules
    bad = tuple(ours.Rule(r.label, r.klass, r.verdict, r.reason, 0xF003, r.match, r.nonzero,
                          16) if r.klass == "c_jr" else r for r in orig("riscv64", 16))
    assert bad != orig("riscv64", 16)
    monkeypatch.setattr(ours, "rules", lambda isa, width=32: bad
                        if (isa, width) == ("riscv64", 16) else orig(isa, width))


def test_a_mutated_table_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Linux's c.jr/c.jalr mask 0xf007 (rs2 not checked) simulates c.mv as a jump: the
    sweep reports it as a simulated word whose control flow SLEIGH sees otherwise."""
    _mutate_c_jr(monkeypatch)
    rec = shard.run_shard("riscv64", 16, 0x8000, 0x9000)
    kinds = {(f["kind"], f["rule"], f["sleigh"]) for f in rec["findings"]}
    assert ("simulated-class-mismatch", "c_jr", "plain") in kinds
    rep = report.build("riscv64", [{**rec, "versions": {}}])
    assert report.matters(rep)


def test_the_real_table_has_no_finding_that_matters_in_the_slices() -> None:
    recs = [{**shard.run_shard(isa, w, lo, lo + 0x1000), "versions": {}}
            for isa, w, lo in SLICES if isa == "riscv64"]
    assert not report.matters(report.build("riscv64", recs))


def test_vendor_table_check_is_clean_and_catches_a_mask_bug(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert [f for f in vendor.check() if f.explained is None] == []
    _mutate_c_jr(monkeypatch)
    found = {(f.kind, f.row, f.vendor) for f in vendor.check() if f.explained is None}
    assert ("overlap", "c_jr", "c.mv") in found


def _sweep(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["sweep", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_checkpoints_resume_and_re_report(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--arch", "loongarch64", "--range", "0x2a0000:0x2a4000", "--shard-size", "0x1000",
            "--results", str(tmp_path), "--inline"]
    code, _, err = _sweep(capsys, *args)
    assert code == 0 and "4 of 4 shards to run" in err and "words/s" in err and "ETA" in err
    first = json.loads((tmp_path / "report-loongarch64.json").read_text())
    ckpt = tmp_path / "loongarch64" / "shards.jsonl"
    lines = ckpt.read_text().splitlines()
    ckpt.write_text("\n".join(lines[:2]) + "\n" + lines[2][:50])  # stopped mid-write
    code, out2, err = _sweep(capsys, *args)
    assert code == 0 and "2 of 4 shards to run" in err
    code, out3, err = _sweep(capsys, *args)
    assert "shards to run" not in err and out3 == out2
    code, out4, _ = _sweep(capsys, *args, "--report-only")
    assert code == 0 and out4 == out2
    again = json.loads((tmp_path / "report-loongarch64.json").read_text())
    first.pop("cpu_seconds"), again.pop("cpu_seconds")
    assert again == first
    assert "32-bit break" in out2 and "trap" in out2


def test_bad_sweep_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for args in (["--arch", "x86_64"], ["--arch", "aarch64", "--range", "5:3"],
                 ["--arch", "aarch64", "--range", "0:0x100000001"],
                 ["--arch", "aarch64", "--shard-size", "1000"],
                 ["--arch", "riscv64", "--width", "16", "--report-only",
                  "--results", str(tmp_path)]):
        code, _, err = _sweep(capsys, *args)
        assert code == 2 and err.count("\n") == 1 and err.startswith("kprobe-ref: "), args


def _dask(*args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "dask"), *args]


def test_sweep_on_a_scheduler_with_two_workers(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    sfile = tmp_path / "scheduler.json"
    procs = [subprocess.Popen(_dask("scheduler", "--host", "127.0.0.1", "--port", "0",
                                    "--no-dashboard", "--scheduler-file", str(sfile)),
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        deadline = time.monotonic() + 60
        while not sfile.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        address = json.loads(sfile.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        procs += [subprocess.Popen(_dask("worker", address, "--nthreads", "1", "--host",
                                         "127.0.0.1", "--no-dashboard", "--name", f"w{i}"),
                                   env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL) for i in range(2)]
        from dask.distributed import Client

        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=60)
            assert len(client.scheduler_info()["workers"]) == 2
        common = ["--arch", "riscv64", "--range", "0:0x10000", "--shard-size", "0x2000"]
        code, out, err = _sweep(capsys, *common, "--scheduler", address,
                                "--results", str(tmp_path / "dask"))
        assert code == 0 and "8/8 shards" in err, err
        code, ref, _ = _sweep(capsys, *common, "--inline", "--results", str(tmp_path / "one"))
        assert out.splitlines()[2:] == ref.splitlines()[2:]
        a = json.loads((tmp_path / "dask" / "report-riscv64.json").read_text())
        b = json.loads((tmp_path / "one" / "report-riscv64.json").read_text())
        a.pop("cpu_seconds"), b.pop("cpu_seconds")
        assert a == b
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)


def test_local_cluster_run_matches_one_process(tmp_path: Path) -> None:
    from kprobe_ref.tools.sweep.engine import sweep

    shards = plan("aarch64", 32, 0xD400_0000, 0xD400_4000, 0x2000)
    with open(os.devnull, "w") as quiet:
        a = sweep(shards, str(tmp_path / "a"), workers=2, progress=quiet)
        b = sweep(shards, str(tmp_path / "b"), inline=True, progress=quiet)
    ra, rb = report.build("aarch64", a), report.build("aarch64", b)
    ra.pop("cpu_seconds"), rb.pop("cpu_seconds")
    assert ra == rb and ra["words"] == 0x4000


def test_loongarch_patterns_touching_a_corrected_instruction_say_so() -> None:
    from kprobe_ref.tools.sweep import known

    assert known.sleigh_errors("loongarch64", (0xFFFF_0000, 0x0041_0000), 32) == ["slli.d"]
    assert "slli.d" in known.sleigh_errors("loongarch64", (0xFF00_0000, 0x0000_0000), 32)
    assert known.sleigh_errors("loongarch64", (0xFFFF_FFFF, 0x4C00_0020), 32) == []
    assert known.sleigh_errors("aarch64", (0xFFFF_0000, 0x0041_0000), 32) == []
