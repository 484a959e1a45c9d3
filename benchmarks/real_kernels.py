"""Load the downloaded Debian kernels and probe their self-contained library functions.

For each ISA with a ``/work/kernels/vmlinux-<isa>`` (or a path given as ``ISA=PATH``), load
the image at its link address, call ``gcd`` and ``int_sqrt`` unprobed, then register a kprobe
at every instruction boundary in turn, call again, unregister, and count the calls whose
result equals the unprobed one; the function's bytes must be identical afterwards.  Prints
the load time, symbol and relocation counts, and the figures.  Never part of the test suite.

    python -m benchmarks.real_kernels [ISA=PATH ...]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from kprobe_ref import ProbeBuilder
from kprobe_ref.errors import KprobeError
from kprobe_ref.manager import register_kprobe, unregister_kprobe
from kprobe_ref.sim.machine import Machine

CALLS: dict[str, tuple[int, ...]] = {"gcd": (462, 1071), "int_sqrt": (1_000_000,)}
STEP = {"x86_64": 1, "aarch64": 4, "riscv64": 2}


def probe_every_boundary(m: Machine, name: str, addr: int, size: int, isa: str) -> str:
    """Probe each instruction start of one function; returns a summary line."""
    args = CALLS[name]
    before, want = m.read(addr, size), m.call(addr, *args)
    equal = probed = refused = 0
    for off in range(0, size, STEP[isa]):
        try:
            p = register_kprobe(m.manager, m.points,
                                ProbeBuilder().with_symbol_addr(addr).with_offset(off))
        except KprobeError:
            refused += 1
            continue
        probed += 1
        equal += m.call(addr, *args) == want
        unregister_kprobe(m.manager, m.points, p)
    same = m.read(addr, size) == before
    return (f"  {name}{args} = {want}: {probed} probed, {equal} equal, "
            f"{refused} offsets refused (non-boundary or unprobeable), bytes identical: {same}")


def main(argv: list[str]) -> int:
    paths = {isa: Path(f"/work/kernels/vmlinux-{isa}") for isa in STEP}
    paths.update({a.split("=", 1)[0]: Path(a.split("=", 1)[1]) for a in argv})
    for isa, path in paths.items():
        if not path.exists():
            print(f"{isa}: {path} missing, skipped")
            continue
        t = time.perf_counter()
        m = Machine(isa)
        img = m.load_elf(path)
        print(f"{isa}: {path} loaded in {time.perf_counter() - t:.1f} s, "
              f"{len(img.function_symbols)} functions ({len(img.functions)} names), "
              f"{img.relocations} RELATIVE relocations applied")
        for name in CALLS:
            if name in img.functions:
                print(probe_every_boundary(m, name, img.functions[name], img.sizes[name], isa))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
