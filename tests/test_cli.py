"""The command line explains itself: a version, help for every option, an example for every
command, and the README naming every command."""

from __future__ import annotations

import argparse
import itertools
import subprocess
import sys
from pathlib import Path

import pytest

from kprobe_ref import __version__
from kprobe_ref.tools.cli import _parser, main

ROOT = Path(__file__).resolve().parents[1]


def _commands() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _nested(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """``parser`` and the parsers of its own subcommands (``vectors export``)."""
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                found += _nested(child)
    return found


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"kprobe-ref {__version__}"


@pytest.mark.parametrize("name", sorted(_commands()))
def test_every_option_has_help_and_every_command_an_example(name: str) -> None:
    for parser in _nested(_commands()[name]):
        for action in parser._actions:
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
        assert parser.epilog and "examples:" in parser.epilog
        assert f"kprobe-ref {name}" in parser.epilog


def test_readme_names_every_command_with_an_example() -> None:
    readme = (ROOT / "README.md").read_text()
    for name in _commands():
        assert f"kprobe-ref {name} " in readme or f"kprobe-ref {name}\n" in readme, name
    assert "kprobe-ref --version" in readme


def test_audit_without_inputs_says_how_to_get_verified_runs(tmp_path: Path) -> None:
    from kprobe_ref.tools.verify import bundled_image

    out = subprocess.run(
        [sys.executable, "-m", "kprobe_ref", "audit", str(bundled_image("riscv64")),
         "--function", "gcd", "--no-proofs"],
        capture_output=True, text=True, cwd=ROOT, timeout=300, check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "no function was run" in out.stdout and "--inputs FILE" in out.stdout


def test_prove_streams_a_line_per_obligation() -> None:
    """Each obligation's line is written (and flushed) as it ends, before the summary."""
    import io

    from kprobe_ref.proofs import runner

    class Recorder(io.StringIO):
        def __init__(self) -> None:
            super().__init__()
            self.flushed: list[str] = []

        def flush(self) -> None:
            self.flushed.append(self.getvalue())

    out = Recorder()
    obligations = runner.all_obligations("x86_64")[:3]
    original = runner.all_obligations
    runner.all_obligations = lambda arch=None: obligations  # type: ignore[assignment]
    try:
        status = runner.prove_all(out, "x86_64", False)
    finally:
        runner.all_obligations = original  # type: ignore[assignment]
    assert status == 0
    lines = [f for f in out.flushed if "proved" in f]
    assert len(lines) >= 3 and all(a in b for a, b in itertools.pairwise(lines))
    assert out.getvalue().strip().endswith("s total")
