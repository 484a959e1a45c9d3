"""Kprobes on ftrace sites are invisible: for random arguments and a random set of probes at
a function's ftrace site (pre and post handlers or none, some disabled, a kretprobe among
them), the call ends in the same registers as unprobed (riscv64's ``t0`` aside: the
site's call links through it, as on Linux), takes no trap, every enabled probe's handlers
see Linux's ``regs->pc``, and unregistering them all brings back the booted NOP area."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kprobe_ref import (
    Kprobe,
    Kretprobe,
    KretprobeBuilder,
    ProbeBuilder,
    register_kprobe,
    register_kretprobe,
    unregister_kprobe,
    unregister_kretprobe,
)
from kprobe_ref.ptregs import PtRegs
from kprobe_ref.sim.machine import Machine
from tests.kernel_elf import (
    RV_DATA,
    RV_TEXT,
    X86_DATA,
    X86_FUNCS,
    X86_TEXT,
    ftrace_kernel,
    rv_text,
    x86_text,
)

SITES = {"x86_64": (X86_TEXT + 0x10, 1, 5), "riscv64": (RV_TEXT, 0, 8)}
"""ISA -> (site, pre-handler PC offset, post-handler PC offset)."""

PROBE = st.tuples(st.booleans(), st.booleans(), st.booleans(), st.booleans())
"""(has a pre handler, has a post handler, enabled, is a kretprobe)."""


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("ftrace")
    x86 = ftrace_kernel(62, X86_TEXT, x86_text(), X86_DATA, [X86_TEXT + 0x10], X86_FUNCS)
    rv = ftrace_kernel(243, RV_TEXT, rv_text(), RV_DATA, [RV_TEXT], {"f": (0, 14)})
    paths = {"x86_64": out / "x86", "riscv64": out / "rv"}
    paths["x86_64"].write_bytes(x86.build())
    paths["riscv64"].write_bytes(rv.build())
    return paths


def _register(m: Machine, site: int, spec: tuple[bool, bool, bool, bool],
              seen: list[tuple[str, int]]) -> Kprobe | Kretprobe:
    pre, post, enabled, ret = spec
    if ret:
        return register_kretprobe(m.manager, m.points, KretprobeBuilder().with_symbol_addr(site)
                                  .with_ret_handler(lambda _d, r: seen.append(("ret", r.pc))))
    b = ProbeBuilder().with_symbol_addr(site).with_enable(enabled)
    if pre:
        b = b.with_pre_handler(lambda _d, r: seen.append(("pre", r.pc)))
    if post:
        b = b.with_post_handler(lambda _d, r: seen.append(("post", r.pc)))
    return register_kprobe(m.manager, m.points, b)


def _without_t0(isa: str, regs: PtRegs) -> PtRegs:
    if isa == "riscv64":
        regs.t0 = 0
    return regs


@pytest.mark.parametrize("isa", sorted(SITES))
@given(a=st.integers(0, 2**64 - 1), b=st.integers(0, 2**64 - 1),
       specs=st.lists(PROBE, min_size=1, max_size=4))
def test_probes_on_an_ftrace_site_are_invisible(images: dict[str, Path], isa: str, a: int,
                                                b: int,
                                                specs: list[tuple[bool, bool, bool, bool]]
                                                ) -> None:
    m = Machine(isa, strict=True)
    m.load_elf(images[isa])
    site, pre_delta, post_delta = SITES[isa]
    nop = m.read(site, 8)
    want = m.call(site, a, b)
    regs0 = _without_t0(isa, m.regs())
    seen: list[tuple[str, int]] = []
    handles = [_register(m, site, spec, seen) for spec in specs]
    assert m.call(site, a, b) == want
    assert _without_t0(isa, m.regs()) == regs0
    rets = sum(s[3] for s in specs)
    assert m.trap_count == (1 if rets else 0)  # the return trampoline, once for the frame
    assert len([e for e in seen if e[0] == "ret"]) == rets
    live = [s for s in specs if s[2] or s[3]]
    expect = [("pre", site + pre_delta) for p, _, on, r in specs if p and on and not r]
    expect += [("post", site + post_delta) for _, q, on, r in specs if q and on and not r]
    assert sorted(e for e in seen if e[0] != "ret") == sorted(expect)
    assert m.ftrace_calls == (1 if live else 0)
    for h in handles:
        if isinstance(h, Kretprobe):
            unregister_kretprobe(m.manager, m.points, h)
        else:
            assert h.ftrace
            unregister_kprobe(m.manager, m.points, h)
    assert m.read(site, 8) == nop
