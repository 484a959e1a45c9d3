"""Worst time and memory per mutated input: ELF images loaded into a machine, inputs files
parsed.

For each ISA, ``--seeds`` mutations of the bundled kernel image (``tests/mutations.py``:
header fields, program and section headers, symbols, truncation, flipped bytes) are loaded
into a fresh ``Machine``; each is timed, its Python allocation peak measured (tracemalloc)
and the guest memory it mapped counted.  The same for mutations of the bundled inputs file
through ``load_specs``.  Printed: inputs tried, how many loaded or were refused, and the
worst time, Python peak and mapped guest memory of any one input, beside the file's size,
so the bound "work linear in the file's size" can be read off.

    PYTHONPATH=. python benchmarks/input_cost.py [--seeds 300] [--arch x86_64]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kprobe_ref.errors import KprobeError
from kprobe_ref.sim import Machine
from kprobe_ref.tools.verify import bundled_image, load_specs
from tests.mutations import mutate_elf, mutate_inputs

ISAS = ("x86_64", "aarch64", "riscv64", "loongarch64")


def _measure(action: object) -> tuple[float, int, str]:
    tracemalloc.start()
    t = time.perf_counter()
    try:
        action()  # type: ignore[operator]
        outcome = "ok"
    except KprobeError:
        outcome = "refused"
    except Exception as exc:  # reported, not raised: the benchmark surveys every input
        outcome = f"CRASH {type(exc).__name__}"
    elapsed = time.perf_counter() - t
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return elapsed, peak, outcome


def images(isa: str, seeds: int, tmp: Path) -> None:
    raw = bundled_image(isa).read_bytes()
    worst_t, worst_py, worst_mapped, outcomes = 0.0, 0, 0, {}
    for seed in range(seeds):
        path = tmp / f"{isa}-{seed}.elf"
        path.write_bytes(mutate_elf(raw, seed))
        m = Machine(isa)
        base = len(m.kernel.perms)
        elapsed, peak, outcome = _measure(lambda m=m, path=path: m.load_elf(path))
        mapped = (len(m.kernel.perms) - base) * 0x1000
        outcomes[outcome.split()[0]] = outcomes.get(outcome.split()[0], 0) + 1
        worst_t, worst_py = max(worst_t, elapsed), max(worst_py, peak)
        worst_mapped = max(worst_mapped, mapped)
    print(f"{'image ' + isa:22} {len(raw):>9} {seeds:>6} {_fmt(outcomes):28} "
          f"{worst_t * 1e3:9.1f} {worst_py / 1024:10.0f} {worst_mapped / 1024:11.0f}")


def inputs(seeds: int) -> None:
    text = (Path(__file__).resolve().parent.parent / "kprobe_ref" / "corpus"
            / "functions.json").read_text()
    worst_t, worst_py, outcomes = 0.0, 0, {}
    for seed in range(seeds):
        data = mutate_inputs(text, seed)

        def parse(data: bytes = data) -> None:
            load_specs(data.decode("utf-8", errors="replace"))

        elapsed, peak, outcome = _measure(parse)
        outcomes[outcome.split()[0]] = outcomes.get(outcome.split()[0], 0) + 1
        worst_t, worst_py = max(worst_t, elapsed), max(worst_py, peak)
    print(f"{'inputs file':22} {len(text):>9} {seeds:>6} {_fmt(outcomes):28} "
          f"{worst_t * 1e3:9.1f} {worst_py / 1024:10.0f} {'-':>11}")


def _fmt(outcomes: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=300)
    p.add_argument("--arch", action="append", choices=ISAS)
    args = p.parse_args()
    print(f"{'input':22} {'bytes':>9} {'tried':>6} {'outcomes':28} {'worst ms':>9} "
          f"{'worst KiB':>10} {'mapped KiB':>11}")
    with tempfile.TemporaryDirectory() as tmp:
        for isa in args.arch or ISAS:
            images(isa, args.seeds, Path(tmp))
    inputs(args.seeds)


if __name__ == "__main__":
    main()
