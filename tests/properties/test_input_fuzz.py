"""Mutation fuzz of ELF images and inputs files.

Every mutated image either loads or is refused with a ``KprobeError`` (never another
exception), within a per-input deadline that reports a hang as a failure; through the
command line, every mutated image or inputs file ends with status 0, 1 or 2, and status 2
comes with exactly one line on standard error.  Mutations are deterministic in their seed
(``tests/mutations.py``); ``benchmarks/input_cost.py`` prints the worst time and memory per
input.  The ``ci`` profile runs a bounded number of seeds, ``thorough`` many more."""

from __future__ import annotations

import io
import signal
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kprobe_ref.errors import KprobeError
from kprobe_ref.sim import Machine
from kprobe_ref.tools.cli import main
from kprobe_ref.tools.verify import bundled_image, load_specs
from tests.mutations import mutate_elf, mutate_inputs

ISAS = ("x86_64", "aarch64", "riscv64", "loongarch64")
DEADLINE = 10.0
"""Seconds one input may take before it counts as a hang."""
SEEDS = st.integers(0, 2**32 - 1)
SCALE = settings.default.max_examples
"""Examples scale with the profile: 40 in ``ci``, 1000 in ``thorough``."""
FUNCTIONS_JSON = Path(__file__).resolve().parents[2] / "kprobe_ref" / "corpus" / "functions.json"


class Hang(Exception):
    """An input took longer than :data:`DEADLINE`."""


@contextmanager
def deadline(seconds: float = DEADLINE) -> Iterator[None]:
    def expire(_signum: int, _frame: object) -> None:
        raise Hang(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_main(*argv: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err), deadline(4 * DEADLINE):
        status = main(list(argv))
    return status, err.getvalue()


def check_cli_outcome(status: int, err: str) -> None:
    assert status in (0, 1, 2), err
    assert "Traceback" not in err and "internal error" not in err, err
    if status == 2:
        lines = err.splitlines()
        assert len([ln for ln in lines if "note:" not in ln]) == 1, err


@pytest.mark.parametrize("isa", ISAS)
@given(seed=SEEDS)
@settings(max_examples=3 * SCALE)
def test_mutated_image_loads_or_is_refused_with_a_kprobe_error(
    isa: str, seed: int, tmp_path_factory: pytest.TempPathFactory
) -> None:
    path = tmp_path_factory.mktemp("elf") / "image.elf"
    path.write_bytes(mutate_elf(bundled_image(isa).read_bytes(), seed))
    with deadline():
        try:
            Machine(isa).load_elf(path)
        except KprobeError as exc:
            assert str(exc)


@given(seed=SEEDS)
@settings(max_examples=5 * SCALE)
def test_mutated_inputs_parse_or_are_refused_with_a_kprobe_error(seed: int) -> None:
    data = mutate_inputs(FUNCTIONS_JSON.read_text(), seed)
    with deadline():
        try:
            text = data.decode()
        except UnicodeDecodeError:
            return
        try:
            load_specs(text)
        except KprobeError as exc:
            assert str(exc)


@pytest.mark.slow
@given(seed=SEEDS)
@settings(max_examples=max(SCALE // 5, 4))
def test_cli_audit_of_a_mutated_image_is_one_line_or_a_report(
    seed: int, tmp_path_factory: pytest.TempPathFactory
) -> None:
    path = tmp_path_factory.mktemp("elf") / "image.elf"
    path.write_bytes(mutate_elf(bundled_image("riscv64").read_bytes(), seed))
    status, err = run_main("audit", str(path), "--no-proofs", "--function", "gcd")
    check_cli_outcome(status, err)


@pytest.mark.slow
@given(seed=SEEDS)
@settings(max_examples=max(SCALE // 5, 4))
def test_cli_audit_with_a_mutated_inputs_file_is_one_line_or_a_report(
    seed: int, tmp_path_factory: pytest.TempPathFactory
) -> None:
    path = tmp_path_factory.mktemp("inputs") / "inputs.json"
    path.write_bytes(mutate_inputs(FUNCTIONS_JSON.read_text(), seed))
    status, err = run_main("audit", "--arch", "riscv64", "--no-proofs", "--function", "gcd",
                           "--inputs", str(path))
    check_cli_outcome(status, err)
