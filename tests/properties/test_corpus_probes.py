"""Every instruction of every bundled corpus function, probed in turn, leaves the function's
return value and memory as the unprobed run leaves them, with a hit count equal to the
number of times the instruction executes unprobed (property (a) of the foundation).

Rejections are allowed only for classes the ISA's documentation lists as rejected.  On the
P-code CPU (loongarch64) the CI profile sweeps a sample of functions; the ``thorough``
profile sweeps them all.
"""

from __future__ import annotations

import os
from importlib import import_module

import pytest

from kprobe_ref.arch import ARCHES
from kprobe_ref.tools.verify import Runner, bundled_image, bundled_specs

THOROUGH = os.environ.get("HYPOTHESIS_PROFILE") == "thorough"
SAMPLE_EVERY = 4
"""On the P-code CPU outside the thorough profile, sweep every fourth function."""


def _functions(isa: str) -> list[str]:
    names = [n for n, s in bundled_specs(isa).items() if s.callable and s.cases]
    if isa == "loongarch64" and not THOROUGH:
        names = names[::SAMPLE_EVERY]
    return names


CASES = [(isa, name) for isa in sorted(ARCHES) for name in _functions(isa)]
_RUNNERS: dict[str, Runner] = {}


def _runner(isa: str) -> Runner:
    if isa not in _RUNNERS:
        _RUNNERS[isa] = Runner(isa, bundled_image(isa))
    return _RUNNERS[isa]


def _rejected_reasons(isa: str) -> set[str]:
    decode = import_module(f"kprobe_ref.arch.{isa}.decode")
    return {r[3] for r in decode.doc_rows() if r[2] == "reject"}


@pytest.mark.slow
@pytest.mark.parametrize(("isa", "name"), CASES, ids=[f"{i}-{n}" for i, n in CASES])
def test_probe_every_instruction(isa: str, name: str) -> None:
    r = _runner(isa)
    spec = bundled_specs(isa)[name]
    allowed = _rejected_reasons(isa)
    problems = []
    sites = 0
    for res in r.sweep(name, spec.cases):
        sites += 1
        if res.rejected is not None and res.rejected not in allowed:
            problems.append(f"{res.address:#x}: rejected for an unlisted reason {res.rejected}")
        problems += [f"{res.address:#x}: {d}" for d in res.divergences]
    assert sites > 0
    assert not problems, "\n".join(problems)
    assert not r.m.points and not r.m.manager.debug_list
