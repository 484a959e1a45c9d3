"""Several CPUs over one kernel: interleaved calls, migration of return-probe instances,
each ISA's live-patching protocol shown necessary by the race it prevents, and grace
periods before executable memory is reused."""

from __future__ import annotations

from functools import cache

import pytest

from kprobe_ref import (
    KprobeError,
    KretprobeBuilder,
    ProbeBuilder,
    register_kprobe,
    register_kretprobe,
    unregister_kprobe,
)
from kprobe_ref.manager import instruction_starts
from kprobe_ref.sim import GuestFault, Machine
from kprobe_ref.sim.smp import ReuseWhileInside
from kprobe_ref.tools.verify import bundled_image

ISAS = ("x86_64", "aarch64", "riscv64", "loongarch64")
CALLS = (("fibonacci", (9,)), ("gcd", (48, 18)), ("factorial", (6,)), ("gcd", (17, 5)))


def machine(isa: str, cpus: int = 4) -> tuple[Machine, dict[str, int]]:
    m = Machine(isa, cpus=cpus)
    img = m.load_elf(bundled_image(isa))
    return m, img.symbols


@cache
def expected(isa: str) -> tuple[int, ...]:
    m, sym = machine(isa, 1)
    return tuple(m.call(sym[f], *a) for f, a in CALLS)


def run_all(m: Machine, cpus: int) -> int:
    """Round-robin, one instruction each, until every CPU's call returned."""
    n = 0
    while not all(m.done(c) for c in range(cpus)):
        for c in range(cpus):
            n += m.step(c)
    return n


@pytest.mark.parametrize("isa", ISAS)
def test_four_cpus_interleaved_match_sequential_calls(isa: str) -> None:
    m, sym = machine(isa)
    seen: list[int] = []
    register_kprobe(m.manager, m.points, ProbeBuilder().with_symbol_addr(sym["gcd"])
                    .with_pre_handler(lambda _d, _r: seen.append(m.current_cpu())))
    for c, (f, a) in enumerate(CALLS):
        m.start(c, sym[f], *a)
    assert not any(m.done(c) for c in range(4))
    run_all(m, 4)
    assert tuple(m.result(c) for c in range(4)) == expected(isa)
    assert sorted(set(seen)) == [1, 3]  # each gcd call entered once (tail recursion loops)
    assert m.call(sym["gcd"], 48, 18) == expected(isa)[1]  # m.call: CPU 0
    assert seen[-1] == 0


@pytest.mark.parametrize("isa", ISAS)
def test_kretprobe_instance_pushed_on_one_cpu_popped_on_another(isa: str) -> None:
    m, sym = machine(isa)
    entries: list[int] = []
    returns: list[tuple[int, int]] = []
    rp = register_kretprobe(
        m.manager, m.points,
        KretprobeBuilder().with_symbol_addr(sym["gcd"]).with_maxactive(4)
        .with_entry_handler(lambda _d, _r: entries.append(m.current_cpu()))
        .with_ret_handler(lambda _d, r: returns.append((m.current_cpu(), r.first_ret_value()))))
    m.start(0, sym["gcd"], 48, 18)
    m.step(0, 3)
    assert entries == [0]
    with pytest.raises(KprobeError):
        m.migrate(0, 0)
    m.migrate(0, 2)
    assert not m.done(0)
    run_all_one(m, 2)
    assert m.result(2) == expected(isa)[1]
    assert returns == [(2, expected(isa)[1])]
    assert rp.nmissed == 0


def run_all_one(m: Machine, cpu: int) -> None:
    while not m.done(cpu):
        m.step(cpu, 50)


def test_migration_refused_while_a_step_is_in_progress() -> None:
    m, sym = machine("x86_64", 2)
    site = sym["gcd"]
    # A post handler makes the step a two-trap one: the CPU holds the probe between the
    # breakpoint and the end-of-step trap.  (A boosted step holds nothing: the task may
    # migrate from the slot, which the grace period keeps alive.)
    register_kprobe(m.manager, m.points,
                    ProbeBuilder().with_symbol_addr(site).with_post_handler(lambda _d, _r: None))
    m.start(0, site, 48, 18)
    m.step(0)  # the breakpoint: the CPU is now in the slot, preemption disabled
    assert m.smp.pc(0) != site
    with pytest.raises(KprobeError, match="preemption"):
        m.migrate(0, 1)
    m.step(0, 2)
    m.migrate(0, 1)
    run_all_one(m, 1)
    assert m.result(1) == expected("x86_64")[1]


def test_bad_smp_input_is_a_kprobe_error() -> None:
    for bad in (0, -1, True, "4"):
        with pytest.raises(KprobeError):
            Machine("riscv64", cpus=bad)  # type: ignore[arg-type]
    m, sym = machine("riscv64", 2)
    with pytest.raises(KprobeError):
        m.step(2)
    with pytest.raises(KprobeError):
        m.result(0)
    m.start(0, sym["gcd"], 1, 1)
    with pytest.raises(KprobeError):
        m.start(0, sym["gcd"], 1, 1)
    with pytest.raises(KprobeError):
        m.start(1, sym["gcd"], *range(20))
    with pytest.raises(KprobeError):
        m.migrate(1, 0)
    assert m.step(1) == 0


# -- races the protocols prevent ---------------------------------------------------------------

def arm_while_fetched(isa: str, protocol: bool, name: str = "gcd",
                      args: tuple[int, ...] = (1071, 462)) -> list[str]:
    """For every instruction of ``name``: CPU 1 runs the call until it is about to execute
    that instruction (it has fetched it), then CPU 0 registers a kprobe there.  Returns
    what went wrong at each site (empty when every site behaved)."""
    m, sym = machine(isa, 2)
    m.smp.patching.enabled = protocol
    start, size = sym[name], m.kernel.function_containing(sym[name])
    assert size is not None
    starts, _ = instruction_starts(isa, start, m.read(start, size[1]))
    want = m.call(start, *args)
    counts = m.watch(set(starts))
    m.call(start, *args)
    execs = dict(counts)
    failures: list[str] = []
    for site in starts[1:]:
        if not execs.get(site):
            continue
        m.start(1, start, *args)
        while m.smp.pc(1) != site:
            m.step(1)
        hits: list[int] = []
        try:
            probe = register_kprobe(m.manager, m.points, ProbeBuilder().with_symbol_addr(site)
                                    .with_pre_handler(lambda _d, _r, h=hits: h.append(1)))
        except KprobeError:
            m.smp.step(1, 10_000_000)
            continue
        try:
            m.smp.step(1, 100_000)
            if not m.done(1):
                failures.append(f"{site:#x}: did not return")
            elif m.result(1) != want:
                failures.append(f"{site:#x}: returned {m.result(1):#x}, not {want:#x}")
            elif len(hits) != execs[site]:
                failures.append(f"{site:#x}: {len(hits)} hits for {execs[site]} executions")
        except GuestFault as exc:
            failures.append(f"{site:#x}: {exc}")
        unregister_kprobe(m.manager, m.points, probe)
        if not protocol:
            m.smp.patching.sync()
    return failures


@pytest.mark.parametrize("isa", ISAS)
def test_arming_needs_the_isa_protocol(isa: str) -> None:
    """With the protocol (x86 ``text_poke_sync``; ``stop_machine`` elsewhere) a probe armed
    while another CPU has the instruction fetched is hit every time; without it the CPU
    executes stale or half-written bytes: a lost hit (x86, a compressed riscv instruction)
    or a torn instruction (aarch64, riscv64, loongarch64)."""
    assert arm_while_fetched(isa, protocol=True) == []
    broken = arm_while_fetched(isa, protocol=False)
    assert broken, "skipping the protocol went unnoticed"


X86_F = 0x50_0000


def x86_poke_machine(protocol: bool) -> Machine:
    """``f``: a 5-byte NOP (to become ``jmp g``) then ``mov eax, 1; ret``; ``g``:
    ``mov eax, 2; ret``."""
    m = Machine("x86_64", cpus=2)
    m.smp.patching.enabled = protocol
    m.map(X86_F, 0x1000, "rx")
    code = bytes.fromhex("0f1f440000" "b801000000" "c3") + b"\xcc" * 5 + \
        bytes.fromhex("b802000000" "c3")
    m.write(X86_F, code)
    m.add_symbol("f", X86_F, len(code))
    return m


def poke_outcomes(protocol: bool) -> list[object]:
    m = x86_poke_machine(protocol)
    g = X86_F + 16
    job = m.smp.patching.text_poke_bp(X86_F, b"\xe9" + (g - (X86_F + 5)).to_bytes(4, "little"))
    outcomes: list[object] = []
    more = True
    while more:
        m.start(1, X86_F)  # CPU 1 arrives at f and fetches it
        more = job.advance()
        try:
            m.smp.step(1, 100)
            outcomes.append(m.result(1) if m.done(1) else "stuck")
        except GuestFault as exc:
            outcomes.append(f"fault at {exc.pc:#x}")
            m.smp.cpus[1].task = None
    m.start(1, X86_F)
    m.smp.step(1, 100)
    outcomes.append(m.result(1))
    return outcomes


def test_x86_text_poke_bp_vs_a_plain_multibyte_write() -> None:
    good = poke_outcomes(True)
    assert set(good) <= {1, 2} and good[-1] == 2
    bad = poke_outcomes(False)
    assert not set(bad) <= {1, 2}, bad


def test_x86_text_poke_bp_refuses_what_it_cannot_emulate() -> None:
    m = x86_poke_machine(True)
    with pytest.raises(KprobeError):
        m.smp.patching.text_poke_bp(X86_F, bytes.fromhex("b803000000"))


def test_aarch64_hotpatch_rule() -> None:
    """NOP to B needs no stop_machine (the CPU executes one or the other); ADD to B does."""
    m = Machine("aarch64", cpus=2)
    base = 0x50_0000
    m.map(base, 0x1000, "rx")
    nop, ret = 0xD503201F, 0xD65F03C0
    mov1, mov2 = 0xD2800020, 0xD2800040  # mov x0, #1 / #2
    b_to_8 = 0x14000002

    def words(*ws: int) -> bytes:
        return b"".join(w.to_bytes(4, "little") for w in ws)

    m.write(base, words(nop, mov1, ret) + words(mov2, ret))
    patching = m.smp.patching
    m.start(1, base)
    patching.patch_text_a64(base, b_to_8 + 1)  # B to mov2: both hot-patch safe
    assert patching.nosync_writes == 1 and patching.stop_machines == 0
    m.smp.step(1, 10)
    assert m.result(1) == 1  # the old NOP ran: allowed
    m.write(base, words(mov1, ret))
    for protocol, want in ((False, "torn"), (True, 2)):
        patching.enabled = protocol
        m.write(base, words(mov1))
        m.start(1, base)
        patching.patch_text_a64(base, b_to_8 + 1)
        try:
            m.smp.step(1, 10)
            got = m.result(1) if m.done(1) else None
        except GuestFault:  # the torn word 0x14000020 branches into unmapped zeros
            got = None
            m.smp.cpus[1].task = None
        assert (got == 2) is (want == 2), (protocol, got)
    assert patching.stop_machines == 1


# -- grace periods -------------------------------------------------------------------------------

def test_freed_slot_memory_waits_for_every_task_to_leave() -> None:
    for grace in (True, False):
        m = Machine("x86_64", cpus=2)
        m.smp.grace.enabled = grace
        slot = m.alloc_kernel_exec_memory(0, 16)
        m.write(slot, bytes.fromhex("b807000000c3"))  # mov eax, 7; ret
        m.start(1, slot)
        m.free_kernel_exec_memory(slot)
        if grace:
            again = m.alloc_kernel_exec_memory(0, 16)
            assert again != slot
            m.smp.step(1, 10)
            assert m.result(1) == 7
            assert m.smp.grace.completed == 1
            assert slot not in m.smp.grace.waiting_regions()
        else:
            with pytest.raises(ReuseWhileInside):
                m.alloc_kernel_exec_memory(0, 16)


def test_unregister_while_another_cpu_is_in_the_slot() -> None:
    for isa in ISAS:
        m, sym = machine(isa, 2)
        site = sym["gcd"]
        probe = register_kprobe(m.manager, m.points, ProbeBuilder().with_symbol_addr(site))
        m.start(1, site, 48, 18)
        m.step(1)
        slot = m.smp.pc(1)
        assert slot is not None and slot != site
        unregister_kprobe(m.manager, m.points, probe)
        other = register_kprobe(m.manager, m.points,
                                ProbeBuilder().with_symbol_addr(sym["factorial"]))
        assert other.point is not None and other.point.slot_addr != slot
        run_all_one(m, 1)
        assert m.result(1) == expected(isa)[1]
