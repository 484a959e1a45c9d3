"""The command line under adversarial use: one line and exit status 2 for bad input, never a
traceback; closed and full standard output; ``--jobs`` capped; and a parallel audit
stopped from outside (SIGTERM, SIGINT, SIGKILL) leaves no worker process behind."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from kprobe_ref.tools.cli import main

ROOT = Path(__file__).resolve().parent.parent


def run_main(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        status = main(list(argv))
    return status, out.getvalue(), err.getvalue()


def cli(*argv: str, stdout: int | None = subprocess.PIPE, timeout: float = 120
        ) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "kprobe_ref", *argv], cwd=ROOT,
                          stdout=stdout, stderr=subprocess.PIPE, timeout=timeout, check=False)


def one_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("kprobe-ref: ") and "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("argv", [
    ("--bogus",),
    (),
    ("audit", "--jobs", "many"),
    ("audit", "--jobs", "0"),
    ("audit", "--arch", "mips"),
    ("audit", "/nonexistent/image"),
    ("reloc", "--arch", "x86_64", "--bytes", "zz", "--addr", "0"),
    ("demo", "--arch", "sparc"),
])  # fmt: skip
def test_bad_usage_is_one_line_and_exit_2(argv: tuple[str, ...]) -> None:
    status, _, err = run_main(*argv)
    assert status == 2
    one_line(err)


@pytest.mark.parametrize("content", [
    b"\xff\xfe\x00",                          # not UTF-8
    b"{",                                     # not JSON
    b"[1, 2]",                                # not an object
    b"[" * 100_000,                           # nested too deeply
    b'{"factorial": 3}',                      # spec not an object
    b'{"factorial": {"args": "int"}}',        # args not a list
    b'{"factorial": {"args": ["int"], "cases": 5}}',
    b'{"factorial": {"args": ["int"], "cases": [[1, 2]]}}',
    b'{"factorial": {"args": ["int"], "cases": [["x"]]}}',
    b'{"factorial": {"args": ["float"], "cases": [[1.5]]}}',
    b'{"factorial": {"args": ["buf"], "cases": [[{"hex": "zz"}]]}}',
    b'{"factorial": {"args": ["buf"], "cases": [[{"size": 1e400}]]}}',
    b'{"factorial": {"args": ["int"], "cases": [[1]], "isas": 7}}',
    b'{"factorial": {"args": ["int"], "cases": [[1]], "isas": "x86_64"}}',
    b'{"factorial": {"args": [["int"]], "cases": [[1]]}}',
])  # fmt: skip
def test_malformed_inputs_file_is_one_line_and_exit_2(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "inputs.json"
    path.write_bytes(content)
    status, _, err = run_main("audit", "--arch", "x86_64", "--function", "factorial",
                              "--no-proofs", "--inputs", str(path))
    assert status == 2, err
    one_line(err)


def test_inputs_file_that_is_a_directory_is_exit_2(tmp_path: Path) -> None:
    status, _, err = run_main("audit", "--arch", "x86_64", "--inputs", str(tmp_path))
    assert status == 2
    one_line(err)


def test_fail_on_reject_naming_no_function_is_exit_2() -> None:
    status, out, err = run_main("audit", "--arch", "x86_64", "--no-proofs",
                                "--fail-on-reject", "no_such_function")
    assert status == 2 and not out
    assert "no_such_function" in one_line(err)


def test_fail_on_reject_outside_the_audited_functions_is_exit_2() -> None:
    status, _, err = run_main("audit", "--arch", "x86_64", "--no-proofs", "--function",
                              "factorial", "--fail-on-reject", "fibonacci")
    assert status == 2
    assert "fibonacci" in one_line(err)


def test_jobs_above_the_cpu_count_is_capped_with_a_note() -> None:
    from kprobe_ref.tools.workers import available_cpus, cap_jobs

    err = io.StringIO()
    assert cap_jobs(available_cpus() + 5, err) == available_cpus()
    assert "capped" in one_line(err.getvalue())
    assert cap_jobs(1, err) == 1


def test_closed_stdout_ends_cleanly() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "kprobe_ref", "audit", "--arch", "x86_64",
                             "--no-proofs", "--function", "factorial", "--json"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.close()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert "closed" in one_line(err.decode())


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_full_stdout_ends_cleanly() -> None:
    with open("/dev/full", "wb") as full:
        res = cli("audit", "--arch", "x86_64", "--no-proofs", "--function", "factorial",
                  stdout=full.fileno())
    assert res.returncode == 2
    assert "No space left" in one_line(res.stderr.decode())


def _session_members(sid: int) -> list[int]:
    """Live (non-zombie) processes of session ``sid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] != "Z" and int(fields[3]) == sid:
            found.append(int(entry.name))
    return found


def _wait_for(predicate: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL],
                         ids=["SIGTERM", "SIGINT", "SIGKILL"])
def test_a_stopped_parallel_audit_leaves_no_worker_behind(sig: signal.Signals) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "kprobe_ref", "audit", "--arch", "x86_64",
                             "--no-proofs", "--jobs", "2"], cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    sid = proc.pid
    try:
        assert _wait_for(lambda: len(_session_members(sid)) >= 3, 60), "no workers started"
        os.kill(proc.pid, sig)
        proc.wait(timeout=30)
        assert _wait_for(lambda: not _session_members(sid), 15), (
            f"left behind: {_session_members(sid)}")
        assert proc.stderr is not None
        assert "Traceback" not in proc.stderr.read().decode()
    finally:
        for pid in _session_members(sid):
            os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
