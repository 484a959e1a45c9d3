"""The P-code CPU's generated fast path computes what its generic closures compute.

Every instruction of every bundled corpus image (four ISAs) runs one step on a CPU with the
fast path and on one without it (``PcodeCpu(isa, fast=False)``), from the same seeded
random register states, with some registers pointing into a writable scratch page so that
loads and stores reach memory.  The stop, the whole register space (``save_context``) and
the scratch page must be identical.  A unit test also pins which instructions the fast path
takes, so that it cannot silently fall back to the generic closures everywhere.
"""

from __future__ import annotations

import random

import pytest

from kprobe_ref.arch import instruction_starts
from kprobe_ref.corpus import bundled_image
from kprobe_ref.sim.cpu import StopKind
from kprobe_ref.sim.elf import read_image
from kprobe_ref.sim.pcode import PAGE_SIZE, PcodeCpu
from kprobe_ref.sim.pcode.cpu import WARM_UP

ISAS = ("x86_64", "aarch64", "riscv64", "loongarch64")
SCRATCH = 0x7000_0000
STATES = 2


def _cpus(isa: str) -> tuple[PcodeCpu, PcodeCpu, list[int]]:
    image = read_image(bundled_image(isa), isa)
    cpus = (PcodeCpu(isa), PcodeCpu(isa, fast=False))
    cpus[0].warm_up = 0  # generate the fast path at the first execution
    for cpu in cpus:
        for seg in image.segments:
            lo = seg.vaddr // PAGE_SIZE * PAGE_SIZE
            hi = -(-(seg.vaddr + seg.memsz) // PAGE_SIZE) * PAGE_SIZE
            cpu.map(lo, hi - lo, "rwx" if "x" in seg.perms else "rw")
            cpu.mem_write(seg.vaddr, seg.data)
        cpu.map(SCRATCH, 2 * PAGE_SIZE, "rw")
    starts: list[int] = []
    for name, start in sorted(image.functions.items()):
        size = image.sizes.get(name, 0)
        if size:
            starts += instruction_starts(isa, start, cpus[0].mem_read(start, size))[0]
    return cpus[0], cpus[1], starts


def _random_state(cpu: PcodeCpu, rng: random.Random) -> list[tuple[str, int]]:
    out = []
    for name in cpu.register_names():
        if rng.random() < 0.5:
            out.append((name, SCRATCH + rng.randrange(PAGE_SIZE // 2, PAGE_SIZE + PAGE_SIZE // 2)))
        else:
            out.append((name, rng.getrandbits(64) >> rng.choice((0, 32, 56, 63))))
    return out


@pytest.mark.parametrize("isa", ISAS)
def test_fast_path_agrees_with_generic_closures_on_every_corpus_instruction(isa: str) -> None:
    fast, generic, starts = _cpus(isa)
    assert starts
    rng = random.Random(f"fast-path-{isa}")
    fast_count = 0
    for pc in starts:
        for _ in range(STATES):
            state = _random_state(fast, rng)
            results = []
            for cpu in (fast, generic):
                cpu.mem_write(SCRATCH, bytes(2 * PAGE_SIZE))
                cpu.reg_write_many(state)
                stop = cpu.run(pc, frozenset(), 1)
                results.append((stop, cpu.save_context(), cpu.mem_read(SCRATCH, 2 * PAGE_SIZE)))
            assert results[0] == results[1], f"{isa} at {pc:#x}"
        fast_count += fast._cache[pc].fast if pc in fast._cache else 0
    assert fast_count > len(starts) // 2, (fast_count, len(starts))


def test_fast_path_is_taken_for_plain_integer_code() -> None:
    # add.d a0, a0, a1 and break 0 (a CALLOTHER run from the generated code) are
    # generated; slli.d a0, a0, 1 is an override and runs as one.
    cpu = PcodeCpu("loongarch64")
    cpu.warm_up = 0
    cpu.map(0x10000, PAGE_SIZE, "rx")
    cpu.mem_write(0x10000, bytes.fromhex("84941000" "84044100" "00002a00"))
    cpu.reg_write("r4", 5)
    cpu.reg_write("r5", 7)
    stop = cpu.run(0x10000, frozenset(), 10)
    assert (stop.kind, stop.pc, stop.steps, cpu.reg_read("r4")) == (StopKind.BREAK, 0x10008, 3, 24)
    assert [cpu._cache[a].fast for a in (0x10000, 0x10004, 0x10008)] == [True, False, True]


def test_fast_path_is_generated_after_the_warm_up_executions() -> None:
    # addi.w a0, a0, 1, then break 0, at an address no other test uses (translations are
    # shared by every CPU, so one made elsewhere would arrive already generated).
    base = 0x5A5A_0000
    cpu = PcodeCpu("loongarch64")
    cpu.map(base, PAGE_SIZE, "rx")
    cpu.mem_write(base, bytes.fromhex("84048002" "00002a00"))
    assert cpu.warm_up == WARM_UP > 0
    seen = []
    for n in range(1, WARM_UP + 3):
        stop = cpu.run(base, frozenset({base + 4}), 10)
        assert (stop.kind, cpu.reg_read("r4")) == (StopKind.STOP_AT, n)
        seen.append(cpu._cache[base].fast)
    assert seen == [False] * (WARM_UP - 1) + [True] * 3
