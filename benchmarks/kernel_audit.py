"""Whole-kernel audit against objdump, on the Debian kernels, side by side in one run.

For each kernel image this prints:

1. **Speed**: the wall time of ``objdump -d`` on the image's ``.text`` and of
   ``kprobe-ref audit IMAGE --jobs N --json`` (every function symbol, streamed to a file),
   their ratio, the same ratio of CPU time (objdump is single-threaded, so this is the
   per-core figure), and instructions per second of each (objdump's count is every
   instruction line of ``.text``; the audit's is every instruction of every function
   symbol).  Proof outcomes come from the cache, warmed before the timing.
2. **Boundaries**: the instruction starts the audit decodes in every function, compared
   with the lines of ``objdump -d`` over all executable sections (objdump restarts decoding at
   each symbol, as the audit does at each function).  Disagreements are grouped by cause:
   where the audit's decoder stops on bytes it does not know (the instruction objdump shows
   there), and anything else (listed).
3. **Blacklist**: the entries the audit's rules add, next to the same rules applied
   independently to ``nm``'s symbol list (``_kbl_addr_*`` variables of ``NOKPROBE_SYMBOL``,
   symbols between the area symbols, table sizes of ``__jump_table``,
   ``.static_call_sites`` and ``__bug_table``), and whether every ``NOKPROBE_SYMBOL``
   function is reported refused.
4. **Fast path**: agreement of the whole-image fast path with ``check_probe`` (through a
   read-only host over the image) on a seeded sample of functions.

    PYTHONPATH=. python benchmarks/kernel_audit.py [--kernels DIR] [--arch A]... [--jobs 2]
                                                   [--sample 300]
    PYTHONPATH=. python benchmarks/kernel_audit.py --fetch [--kernels DIR]  # download first

``--fetch`` downloads the Debian packages (``apt-get download``; the arm64 and riscv64
architectures and, for riscv64, the trixie suite must be configured in apt), extracts the
vmlinux and strips its debug information into ``DIR/vmlinux-<isa>``.  Nothing is downloaded
otherwise.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from array import array
from collections import Counter
from pathlib import Path

from kprobe_ref.kernel.blacklist import Kallsyms, build_blacklist
from kprobe_ref.kernel.elfscan import KernelElf
from kprobe_ref.manager import ProbeManager
from kprobe_ref.tools.kernel_audit.fastpath import FastPath, disagreements
from kprobe_ref.tools.kernel_audit.host import ImageHost
from kprobe_ref.tools.kernel_audit.whole import KernelFunction, kernel_functions

OBJDUMP = {"x86_64": "objdump", "aarch64": "aarch64-linux-gnu-objdump",
           "riscv64": "riscv64-linux-gnu-objdump"}
OBJCOPY = {isa: tool.replace("objdump", "objcopy") for isa, tool in OBJDUMP.items()}
"""The ISA's ``objcopy``: the host's cannot rewrite an arm64 or riscv64 ELF file."""
PACKAGES = {
    "x86_64": "linux-image-6.1.0-57-cloud-amd64-dbg",
    "aarch64": "linux-image-6.1.0-57-cloud-arm64-dbg:arm64",
    "riscv64": "linux-image-6.12.117+deb13-riscv64-dbg:riscv64",
}
LINE = re.compile(rb"^\s*([0-9a-f]+):\t([0-9a-f ]+)\t(\S*)")


def fetch(kernels: Path) -> None:
    """Download, extract and strip the three kernels (only when asked)."""
    kernels.mkdir(parents=True, exist_ok=True)
    for isa, pkg in PACKAGES.items():
        out = kernels / f"vmlinux-{isa}"
        if out.exists():
            print(f"{out} exists")
            continue
        subprocess.run(["apt-get", "download", pkg], cwd=kernels, check=True)
        deb = next(kernels.glob(pkg.split(":")[0] + "_*.deb"))
        x = kernels / f"x-{pkg.split(':')[0]}"
        x.mkdir(exist_ok=True)
        tar = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
        subprocess.run(["tar", "-x", "-C", str(x), "--wildcards", "*vmlinux*"], stdin=tar.stdout,
                       check=True)
        tar.wait()
        vmlinux = next(p for p in x.rglob("vmlinux*") if p.is_file())
        subprocess.run([OBJCOPY[isa], "--strip-debug", str(vmlinux), str(out)], check=True)
        print(f"{out} from {deb.name}")


def timed(cmd: list[str], stdout: int | object) -> tuple[float, float]:
    """Wall and CPU seconds (user + system, children included) of a command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(cmd, stdout=stdout, check=True)  # type: ignore[call-overload]
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def objdump_starts(objdump: str, path: str, sections: list[str]) -> tuple[array, list[bytes]]:
    """Every instruction start objdump prints (sorted) and its mnemonic."""
    cmd = [objdump, "-d", "--insn-width=16", *(f"--section={s}" for s in sections), path]
    addrs, mnems = array("Q"), []
    with subprocess.Popen(cmd, stdout=subprocess.PIPE) as p:
        assert p.stdout is not None
        for line in p.stdout:
            m = LINE.match(line)
            if m:
                addrs.append(int(m.group(1), 16))
                mnems.append(m.group(3))
    order = sorted(range(len(addrs)), key=addrs.__getitem__)
    return array("Q", (addrs[i] for i in order)), [mnems[i] for i in order]


def speed(isa: str, path: str, jobs: int, out_json: str) -> dict[str, float]:
    from kprobe_ref.proofs.cache import cached_status

    cached_status(isa, jobs)
    n_objdump = 0
    with subprocess.Popen([OBJDUMP[isa], "-d", "--insn-width=16", "--section=.text", path],
                          stdout=subprocess.PIPE) as p:
        assert p.stdout is not None
        n_objdump = sum(1 for line in p.stdout if LINE.match(line))
    o_wall, o_cpu = timed([OBJDUMP[isa], "-d", "--section=.text", path], subprocess.DEVNULL)
    with open(out_json, "w") as fh:
        a_wall, a_cpu = timed([sys.executable, "-m", "kprobe_ref", "audit", path, "--jobs",
                               str(jobs), "--json"], fh)
    summary = json.loads(Path(out_json).read_text().rsplit("\n", 2)[-2])
    n_audit = summary["instructions"]
    return {"objdump_wall": o_wall, "objdump_cpu": o_cpu, "audit_wall": a_wall,
            "audit_cpu": a_cpu, "objdump_insns": n_objdump, "audit_insns": n_audit,
            "errors": summary["errors"]}


def explain(kelf: KernelElf, f: KernelFunction, ours: set[int], theirs: set[int],
            symbols: list[int]) -> str:
    """Why objdump's instruction starts differ from the audit's in function ``f``."""
    first = min(ours.symmetric_difference(theirs))
    lo = bisect.bisect_right(symbols, f.address)
    if lo < len(symbols) and symbols[lo] <= first + 16 and symbols[lo] < f.address + f.size:
        return ("objdump restarts decoding at a symbol inside the function (instructions "
                "that overlap by design, e.g. the retbleed/SRSO untraining sequences)")
    before = max((a for a in ours if a < first), default=f.address)
    if b"\x9b" in (kelf.read(before, 1), kelf.read(first, 1)):
        return ("objdump prints fwait (9b) and the x87 instruction after it as one "
                "(finit, fstsw...); 9b is an instruction of its own (SDM FWAIT)")
    return "other"


def boundaries(isa: str, kelf: KernelElf, funcs: list[KernelFunction], fast: FastPath,
               ks: Kallsyms) -> tuple[int, int, Counter[str], list[str]]:
    """(instructions agreeing, instructions compared, disagreements by cause, examples)."""
    sections = [s.name for s in kelf.executable_sections()]
    addrs, mnems = objdump_starts(OBJDUMP[isa], kelf.path, sections)
    inner = sorted(set(ks.addrs))
    agree = total = 0
    causes: Counter[str] = Counter()
    examples: list[str] = []
    for f in funcs:
        code = kelf.read(f.address, f.size)
        mine, stuck = fast.starts(code, f.address)
        lo = bisect.bisect_left(addrs, f.address)
        hi = bisect.bisect_left(addrs, f.address + f.size)
        theirs = addrs[lo:hi]
        ours = [f.address + o for o, _ in mine]
        same = len(set(ours).intersection(theirs))
        agree += same
        total += max(len(theirs), len(ours))
        if same == len(theirs) == len(ours):
            continue
        if stuck is not None:
            at = bisect.bisect_left(addrs, f.address + stuck)
            what = mnems[at].decode() if at < len(mnems) and addrs[at] == f.address + stuck \
                else "?"
            causes[f"the audit's decoder (capstone) does not know '{what}'"] += 1
            rest = sum(1 for a in theirs if a >= f.address + stuck)
            if same + rest == len(theirs):
                continue
        cause = explain(kelf, f, set(ours), set(theirs), inner)
        causes[cause] += 1
        if cause == "other" and len(examples) < 10:
            diff = sorted(set(ours).symmetric_difference(theirs))[:1]
            examples.append(f"{f.names[0]}@{f.address:#x}: first difference at "
                            f"{diff[0]:#x}" if diff else f.names[0])
    return agree, total, causes, examples


def nm_rules(kelf: KernelElf) -> dict[str, int]:
    """Linux's rules applied to ``nm -n``'s list, independently of the audit's code."""
    out = subprocess.run(["nm", "-n", kelf.path], capture_output=True, text=True,
                         check=True).stdout
    syms: list[tuple[int, str, str]] = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and not parts[2].startswith(("$", ".L")):
            syms.append((int(parts[0], 16), parts[1], parts[2]))
    by = {n: a for a, _, n in syms}
    counts: dict[str, int] = {}
    lo, hi = by.get("__start_kprobe_blacklist"), by.get("__stop_kprobe_blacklist")
    if lo is not None and hi is not None:
        counts["nokprobe table words"] = (hi - lo) // 8
        counts["nokprobe _kbl_addr_ symbols"] = sum(
            1 for a, _, n in syms if n.startswith("_kbl_addr_") and lo <= a < hi)
    arch = __import__(f"kprobe_ref.arch.{kelf.isa}.kernel", fromlist=["x"])
    for prefix, cause in (("__kprobes_text", "kprobes-text"), ("__noinstr_text", "noinstr-text"),
                          *arch.BLACKLIST_AREAS):
        a, b = by.get(f"{prefix}_start"), by.get(f"{prefix}_end")
        if a is not None and b is not None:
            counts[f"{cause} symbols"] = len({x for x, t, _ in syms if a <= x < b
                                             and t in "TtWw"}) if b > a else 0
    for name, size in (("__jump_table", 16), ("static_call_sites", 8), ("__bug_table", 12)):
        a, b = by.get(f"__start_{name}"), by.get(f"__stop_{name}")
        if a is not None and b is not None:
            counts[f"{name} entries"] = (b - a) // size
    return counts


def nokprobe_reported(kelf: KernelElf, out_json: str) -> tuple[int, int, list[str]]:
    """How many ``NOKPROBE_SYMBOL`` functions (from ``_kbl_addr_<name>``) the audit reports
    refused, of how many found among its records."""
    names = {line.split()[2][len("_kbl_addr_"):] for line in subprocess.run(
        ["nm", kelf.path], capture_output=True, text=True, check=True).stdout.splitlines()
        if line.split()[-1].startswith("_kbl_addr_")}
    found = refused = 0
    missing = []
    with open(out_json) as fh:
        for line in fh:
            rec = json.loads(line)
            if rec["record"] != "function":
                continue
            if names.intersection([rec["name"], *rec["aliases"]]):
                found += 1
                if rec["linux"] != "allowed":
                    refused += 1
                else:
                    missing.append(rec["name"])
    return refused, found, missing


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kernels", default="/work/kernels", type=Path)
    p.add_argument("--arch", action="append", choices=sorted(OBJDUMP))
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--sample", type=int, default=300, help="functions for the check_probe test")
    p.add_argument("--fetch", action="store_true", help="download the kernel packages first")
    args = p.parse_args()
    if args.fetch:
        fetch(args.kernels)
    status = 0
    for isa in args.arch or sorted(OBJDUMP):
        path = args.kernels / f"vmlinux-{isa}"
        if not path.exists() or shutil.which(OBJDUMP[isa]) is None:
            print(f"{isa}: skipped ({path} or {OBJDUMP[isa]} missing; --fetch downloads)")
            continue
        status |= report(isa, str(path), args)
    return status


def report(isa: str, path: str, args: argparse.Namespace) -> int:
    print(f"== {isa}: {path} (cores: {os.cpu_count()}, load {os.getloadavg()[0]:.1f})")
    with tempfile.TemporaryDirectory() as tmp:
        out_json = str(Path(tmp) / "audit.jsonl")
        s = speed(isa, path, args.jobs, out_json)
        ratio, per_core = s["audit_wall"] / s["objdump_wall"], s["audit_cpu"] / s["objdump_cpu"]
        print(f"  objdump -d .text      {s['objdump_wall']:7.2f} s wall {s['objdump_cpu']:7.2f} s "
              f"cpu  {s['objdump_insns']:>9} insns  {s['objdump_insns'] / s['objdump_wall']:>9.0f}"
              f"/s")
        print(f"  audit --jobs {args.jobs}        {s['audit_wall']:7.2f} s wall "
              f"{s['audit_cpu']:7.2f} s cpu  {s['audit_insns']:>9} insns  "
              f"{s['audit_insns'] / s['audit_wall']:>9.0f}/s "
              f"({s['audit_insns'] / s['audit_cpu']:.0f}/s per core)")
        print(f"  ratio to objdump: {ratio:.2f}x wall (limit 5), {per_core:.2f}x cpu "
              f"(per core, limit 10); error records: {s['errors']}")
        kelf = KernelElf(path)
        symbols = kelf.symbols()
        funcs = kernel_functions(kelf, symbols, Kallsyms(symbols))
        fast = FastPath(isa)
        agree, total, causes, examples = boundaries(isa, kelf, funcs, fast, Kallsyms(symbols))
        print(f"  instruction starts agreeing with objdump: {agree}/{total} "
              f"({100 * agree / max(total, 1):.4f}%) over {len(funcs)} functions")
        for cause, n in causes.most_common():
            print(f"    {n:6} functions: {cause}")
        for e in examples:
            print(f"      {e}")
        bl = build_blacklist(kelf, symbols)
        sites = {k: v for k, v in bl.count_by_cause().items()
                 if k in ("jump-label", "static-call", "bug")}
        print(f"  blacklist entries (audit): {bl.entries}; sites: {sites}; skipped as Linux "
              f"skips them (not kernel text): {bl.skipped}")
        print(f"  Linux's rules over nm:     {nm_rules(kelf)}")
        refused, found, missing = nokprobe_reported(kelf, out_json)
        print(f"  NOKPROBE_SYMBOL functions reported refused: {refused}/{found}"
              f"{' missing: ' + ', '.join(missing[:5]) if missing else ''}")
        host = ImageHost(kelf, [(f.address, f.size) for f in funcs], bl)
        manager = ProbeManager(isa, host)
        sample = random.Random(f"kernel-audit {isa}").sample(funcs, min(args.sample, len(funcs)))
        bad: list[str] = []
        n = 0
        for f in sample:
            code = kelf.read(f.address, f.size)
            bad += disagreements(fast, manager, code, f.address, bl)
            n += len(fast.starts(code, f.address)[0])
        print(f"  fast path vs check_probe: {n - len(bad)}/{n} instructions agree "
              f"({len(sample)} sampled functions){' ' + bad[0] if bad else ''}")
        kelf.close()
    return 1 if ratio > 5 or bad or s["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
