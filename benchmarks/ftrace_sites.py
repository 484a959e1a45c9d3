"""Function entries of the downloaded Debian kernels as Linux boots them.

For each ISA with a ``/work/kernels/vmlinux-<isa>`` (or a path given as ``ISA=PATH``):
load the image, and print what ftrace's boot conversion did (``__mcount_loc`` entries,
padding, sites converted, bytes changed, entries left alone), how many functions have a
site at their entry, then register a kprobe at every ``--every``-th site and count those that
go through ftrace, those refused and those armed with a breakpoint, checking each site's
bytes come back.  Last, ``gcd(462, 1071)`` is called ``--calls`` times unprobed, with a
kprobe on its ftrace site, and with a kprobe on its second instruction (a breakpoint), and
the traps, trampoline calls and time per call (best of three rounds, after warm-up calls)
are printed side by side, as ratios to the unprobed call.  Never part of the test suite.

    PYTHONPATH=$PWD python benchmarks/ftrace_sites.py [--every N] [--calls N] [ISA=PATH ...]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

from kprobe_ref import ProbeBuilder
from kprobe_ref.arch import instruction_starts
from kprobe_ref.errors import KprobeError
from kprobe_ref.kernel.ftrace import FtraceTable
from kprobe_ref.manager import register_kprobe, unregister_kprobe
from kprobe_ref.sim.elf import Image
from kprobe_ref.sim.machine import Machine

ISAS = ("x86_64", "aarch64", "riscv64")


def conversion_line(t: FtraceTable) -> str:
    """What the boot conversion did."""
    return (f"  __mcount_loc: {t.entries} entries ({t.padding} zero padding), "
            f"{len(t.sites)} sites converted, {t.changed} rewritten, "
            f"{len(t.unconverted)} left alone; record address = entry + {t.abi.rec_offset}, "
            f"kprobes on ftrace: {'yes' if t.abi.kprobes_on_ftrace else 'no'}")


def entry_line(img: Image, t: FtraceTable) -> str:
    """How many functions have a site at their entry (within the first 8 bytes)."""
    sites = t.sites
    with_site = sum(any(a + d in sites for d in range(0, 9)) for a, _, _ in img.function_symbols)
    return (f"  functions with an ftrace site in their first 8 bytes: {with_site} of "
            f"{len(img.function_symbols)}")


def sample_line(m: Machine, t: FtraceTable, every: int) -> str:
    """Register and unregister a kprobe at every ``every``-th site."""
    ftrace = refused = breakpoint = same = 0
    why: Counter[str] = Counter()
    addrs = t.addresses[::every]
    for addr in addrs:
        before = m.read(addr, 8)
        try:
            h = register_kprobe(m.manager, m.points, ProbeBuilder().with_symbol_addr(addr))
        except KprobeError as exc:
            refused += 1
            why[f"{type(exc).__name__} {getattr(exc, 'reason', '') or ''}".strip()] += 1
            continue
        ftrace += h.ftrace
        breakpoint += not h.ftrace
        unregister_kprobe(m.manager, m.points, h)
        same += m.read(addr, 8) == before
    reasons = ", ".join(f"{n} {w}" for w, n in why.most_common(4))
    return (f"  kprobes at {len(addrs)} sites (every {every}th): {ftrace} through ftrace, "
            f"{breakpoint} breakpoints, {refused} refused ({reasons or 'none'}); bytes back: "
            f"{same} of {ftrace + breakpoint}")


def timed_calls(m: Machine, addr: int, calls: int, rounds: int = 3
                ) -> tuple[float, int, int, int]:
    """The best of ``rounds`` rounds of ``calls`` calls (after a few warm-up calls, so the
    CPU's translation cache is filled): seconds per call, and the traps, trampoline calls
    and result of one round."""
    for _ in range(5):
        m.call(addr, 462, 1071)
    best, counts = float("inf"), (0, 0, 0)
    for _ in range(rounds):
        traps, tramps = m.trap_count, m.ftrace_calls
        t0 = time.perf_counter()
        ret = 0
        for _ in range(calls):
            ret = m.call(addr, 462, 1071)
        best = min(best, (time.perf_counter() - t0) / calls)
        counts = (m.trap_count - traps, m.ftrace_calls - tramps, ret)
    return best, *counts


def gcd_lines(m: Machine, img: Image, t: FtraceTable, calls: int) -> list[str]:
    """gcd unprobed, probed on its ftrace site, probed by a breakpoint, side by side."""
    g, size = img.functions["gcd"], img.sizes["gcd"]
    site = next((a for a in t.addresses if g <= a < g + 9), None)
    starts, _ = instruction_starts(m.isa, g, m.read(g, size))
    after = [s for s in starts if site is None or s > site]
    base, _, _, want = timed_calls(m, g, calls)
    out = [f"  gcd(462, 1071) = {want}, {calls} calls each:"]
    out.append("    unprobed:                  1.00x time, 0 traps, 0 trampoline calls")
    for label, where in (("kprobe on the ftrace site", site),
                         ("kprobe by breakpoint", after[0] if after else None)):
        if where is None:
            continue
        try:
            h = register_kprobe(m.manager, m.points, ProbeBuilder().with_symbol_addr(where)
                                .with_pre_handler(lambda _d, _r: None))
        except KprobeError as exc:
            out.append(f"    {label} at {where:#x}: refused ({exc})")
            continue
        per, traps, tramps, ret = timed_calls(m, g, calls)
        unregister_kprobe(m.manager, m.points, h)
        out.append(f"    {label + ' at ' + hex(where) + ':':<44} {per / base:.2f}x time, "
                   f"{traps} traps, {tramps} trampoline calls, result equal: {ret == want}, "
                   f"ftrace: {h.ftrace}")
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--every", type=int, default=100, help="probe every Nth site")
    ap.add_argument("--calls", type=int, default=200, help="calls of gcd per variant")
    ap.add_argument("paths", nargs="*", help="ISA=PATH")
    args = ap.parse_args(argv)
    paths = {isa: Path(f"/work/kernels/vmlinux-{isa}") for isa in ISAS}
    paths.update({a.split("=", 1)[0]: Path(a.split("=", 1)[1]) for a in args.paths})
    for isa, path in paths.items():
        if not path.exists():
            print(f"{isa}: {path} missing, skipped")
            continue
        t0 = time.perf_counter()
        m = Machine(isa)
        img = m.load_elf(path)
        print(f"{isa}: {path} loaded and converted in {time.perf_counter() - t0:.1f} s")
        t = m.ftrace
        if t is None:
            print("  no __mcount_loc table")
            continue
        print(conversion_line(t))
        for entry, why in t.unconverted[:3]:
            print(f"    left alone: {entry:#x}: {why}")
        print(entry_line(img, t))
        print(sample_line(m, t, args.every))
        if "gcd" in img.functions:
            print("\n".join(gcd_lines(m, img, t, args.calls)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
