"""The whole-image audit: every function symbol of a kernel, streamed, then summarised.

``kprobe-ref audit vmlinux`` without ``--function`` comes here when the image is a Linux
kernel (it defines ``_stext`` and ``_etext``).  Each distinct function-symbol address gets
one record (its other names are its ``aliases``); its extent is the largest ``st_size`` at
that address, or, for a symbol of size 0, up to the next kallsyms symbol, as Linux computes
it.  Every instruction gets the verdict :func:`~kprobe_ref.manager.check_probe` would give,
through :class:`~kprobe_ref.tools.kernel_audit.fastpath.FastPath` and the image's
:class:`~kprobe_ref.kernel.blacklist.Blacklist`.  Functions named in an inputs file are also
run and verified, as for a small image.

Records are produced by ``jobs`` worker processes over chunks of functions in address order
and written as they arrive (a bounded number of chunks in flight), so memory stays flat on a
7-million-instruction image.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TextIO

from kprobe_ref.errors import InvalidImage
from kprobe_ref.kernel.blacklist import (
    LINUX_VERSION,
    RANGE_CAUSES,
    Blacklist,
    Kallsyms,
    build_blacklist,
)
from kprobe_ref.kernel.elfscan import STT_FUNC, KernelElf, Symbol
from kprobe_ref.tools.kernel_audit.fastpath import FastPath

__all__ = [
    "KernelFunction",
    "Summary",
    "audit_kernel",
    "is_kernel_image",
    "kernel_functions",
    "run_kernel_audit",
]

CHUNK = 400
"""Functions per unit of work sent to a worker."""

Record = dict[str, Any]


@dataclass(frozen=True)
class KernelFunction:
    """One distinct function address: its names (first: the symbol table's first), extent
    and whether its size came from kallsyms (a size-0 symbol)."""

    address: int
    size: int
    names: tuple[str, ...]
    sized_by_kallsyms: bool = False


def is_kernel_image(path: str) -> bool:
    """Whether ``path`` is a Linux kernel image (an ELF file defining ``_stext`` and
    ``_etext``); ``False`` for anything unreadable."""
    try:
        kelf = KernelElf(path)
    except Exception:
        return False
    try:
        return kelf.data.find(b"\0_stext\0") >= 0 and kelf.data.find(b"\0_etext\0") >= 0
    finally:
        kelf.close()


def kernel_functions(kelf: KernelElf, symbols: list[Symbol], ks: Kallsyms
                     ) -> list[KernelFunction]:
    """Every function symbol, one entry per distinct address, in address order."""
    names: dict[int, list[str]] = {}
    sizes: dict[int, int] = {}
    for s in symbols:
        if s.kind != STT_FUNC:
            continue
        names.setdefault(s.addr, []).append(s.name)
        sizes[s.addr] = max(sizes.get(s.addr, 0), s.size)
    out = []
    for addr in sorted(names):
        size, by_ks = sizes[addr], False
        if size == 0:
            found = ks.containing(addr)
            sec = kelf.section_at(addr)
            if found is not None and sec is not None:
                size = min(found[0] + found[1], sec.addr + sec.size) - addr
                by_ks = True
        out.append(KernelFunction(addr, size, tuple(names[addr]), by_ks))
    return out


# -- one function ----------------------------------------------------------------------------------


@dataclass
class _Worker:
    kelf: KernelElf
    fast: FastPath
    blacklist: Blacklist
    proofs: Callable[[str, str], bool | None] | None
    specs: dict[str, Any] = field(default_factory=dict)


_STATE: list[_Worker] = []


def _skip_listing(reason: str) -> bool:
    """Rejections not listed instruction by instruction: whole blacklisted ranges."""
    return reason.startswith("blacklisted:") and reason[12:] in RANGE_CAUSES


def audit_function(w: _Worker, f: KernelFunction) -> Record:
    """The record of one function."""
    rec: Record = {"record": "function", "name": f.names[0], "aliases": list(f.names[1:]),
                   "address": f.address, "size": f.size}
    try:
        code = w.kelf.read(f.address, f.size)
    except Exception as exc:
        rec["error"] = str(exc)
        return rec
    insns, stuck = w.fast.function(code, f.address, w.blacklist)
    verdicts: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    proved: Counter[str] = Counter()
    for (verdict, klass, reason), n in Counter(i[2:] for i in insns).items():
        verdicts[verdict] += n
        reasons[reason] += n
        if w.proofs is not None:
            p = w.proofs(verdict, klass)
            proved["n/a" if p is None else "proved" if p else "unproved"] += n
    rejected = []
    if verdicts["reject"]:
        for addr, _n, verdict, _klass, reason in insns:
            if verdict == "reject" and not _skip_listing(reason):
                off = addr - f.address
                rejected.append({"offset": off, "text": w.fast.text(code[off:], addr),
                                 "reason": reason})
    cause = w.blacklist.cause(f.address)
    own = sum(n for r, n in reasons.items() if r in _REJECT_REASONS)
    for addr, n, _verdict, _klass, reason in insns:
        if reason.startswith("blacklisted:") and n:
            off = addr - f.address
            own += w.fast.verdict(code[off : off + n], addr)[0] == "reject"
    rec.update(
        instructions=len(insns),
        verdicts=dict(verdicts),
        reasons=dict(reasons),
        linux="allowed" if cause is None else f"refused:{cause}",
        probeable=bool(insns) and verdicts["reject"] == 0,
        rule_rejects=own,
        rejected=rejected,
        undecoded_from=stuck,
        error=None,
    )
    if w.proofs is not None:
        rec["proved"] = dict(proved)
    if f.names[0] in w.specs:
        _verify(w, f, rec)
    return rec


def _verify(w: _Worker, f: KernelFunction, rec: Record) -> None:
    """Run the function with its inputs (through the machine) and add the outcome."""
    from kprobe_ref.tools.audit import audit_function as run_function

    spec = w.specs[f.names[0]]
    got = run_function(w.fast.isa, w.kelf.path, f.names[0], spec.cases, "file")
    rec["verified"] = dict(Counter(i.verified for i in got.instructions))
    rec["divergences"] = [f"+{i.offset:#x} {d}" for i in got.instructions
                          for d in i.divergences]
    if got.error:
        rec["error"] = got.error


def _init(path: str, isa: str, blacklist: Blacklist, proofs: bool, specs: dict[str, Any]
          ) -> None:
    from kprobe_ref.proofs.cache import cached_status

    status = cached_status(isa)[0] if proofs else None
    rule = _memo(status.rule) if status is not None else None
    _STATE[:] = [_Worker(KernelElf(path), FastPath(isa), blacklist, rule, specs)]


def _memo(fn: Callable[[str, str], bool | None]) -> Callable[[str, str], bool | None]:
    seen: dict[tuple[str, str], bool | None] = {}

    def rule(verdict: str, klass: str) -> bool | None:
        key = (verdict, klass)
        if key not in seen:
            seen[key] = fn(verdict, klass)
        return seen[key]

    return rule


def _chunk(funcs: list[KernelFunction]) -> list[Record]:
    w = _STATE[0]
    return [audit_function(w, f) for f in funcs]


# -- the image -------------------------------------------------------------------------------------


@dataclass
class Summary:
    """Totals over the records of an image."""

    functions: int = 0
    instructions: int = 0
    verdicts: Counter[str] = field(default_factory=Counter)
    rejections: Counter[str] = field(default_factory=Counter)
    blacklist: Counter[str] = field(default_factory=Counter)
    """Instructions per blacklist cause."""
    refused_functions: Counter[str] = field(default_factory=Counter)
    """Functions whose entry Linux refuses, per cause."""
    proved: Counter[str] = field(default_factory=Counter)
    fully_probeable: int = 0
    allowed_not_probeable: int = 0
    """Linux accepts a probe at the entry, but an instruction of the function is rejected
    by the decode table or an exclusive sequence (a place no probe can be put correctly)."""
    refused_probeable: int = 0
    """Linux refuses the function (blacklist), though every instruction decodes to a
    simulate or step verdict."""
    undecoded: int = 0
    errors: int = 0
    divergent: int = 0
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, rec: Record) -> None:
        """Count one function record."""
        self.functions += 1
        if rec.get("error"):
            self.errors += 1
        if "verdicts" not in rec:
            return
        self.instructions += rec["instructions"]
        self.verdicts.update(rec["verdicts"])
        self.proved.update(rec.get("proved", {}))
        for reason, n in rec["reasons"].items():
            if reason.startswith("blacklisted:"):
                self.blacklist[reason[12:]] += n
            if reason in _REJECT_REASONS or reason.startswith("blacklisted:"):
                self.rejections[reason] += n
        if rec["linux"] != "allowed":
            self.refused_functions[rec["linux"][8:]] += 1
            if not rec["rule_rejects"] and rec["instructions"]:
                self.refused_probeable += 1
                self._example("refused_probeable", rec["name"])
        elif any(r in _REJECT_REASONS for r in rec["reasons"]):
            self.allowed_not_probeable += 1
            self._example("allowed_not_probeable", rec["name"])
        if rec["probeable"]:
            self.fully_probeable += 1
        if rec["undecoded_from"] is not None:
            self.undecoded += 1
            self._example("undecoded", rec["name"])
        self.divergent += len(rec.get("divergences", []))

    def _example(self, what: str, name: str) -> None:
        got = self.examples.setdefault(what, [])
        if len(got) < 10:
            got.append(name)

    def as_dict(self) -> Record:
        """The summary as a JSON object."""
        return {"record": "summary", "functions": self.functions,
                "instructions": self.instructions, "verdicts": dict(self.verdicts),
                "rejections": dict(self.rejections), "blacklist": dict(self.blacklist),
                "refused_functions": dict(self.refused_functions),
                "proved": dict(self.proved), "fully_probeable": self.fully_probeable,
                "allowed_not_probeable": self.allowed_not_probeable,
                "refused_probeable": self.refused_probeable, "undecoded": self.undecoded,
                "errors": self.errors, "divergent": self.divergent,
                "examples": self.examples}


def _reject_reasons() -> frozenset[str]:
    from kprobe_ref.reasons import REASONS

    return frozenset(r for r in REASONS if r not in _STEP_OR_SIM)


_STEP_OR_SIM = frozenset({"no-pc-use", "rip-relative-operand", "branch-relative",
                          "branch-counted", "call-relative", "branch-indirect",
                          "call-indirect", "return", "pc-relative-address",
                          "pc-relative-load", "no-op"})
_REJECT_REASONS = _reject_reasons()


def audit_kernel(path: str, jobs: int = 1, proofs: bool = True,
                 specs: dict[str, Any] | None = None,
                 progress: Callable[[int, int, int], None] | None = None,
                 isa: str | None = None) -> tuple[Record, Iterator[Record]]:
    """The image header record and an iterator over its function records, in address
    order.  ``progress(done, total, instructions)`` is called after each chunk."""
    kelf = KernelElf(path)
    if isa is not None and kelf.isa != isa:
        kelf.close()
        raise InvalidImage(f"{path} is a {kelf.isa} image, not {isa}")
    symbols = kelf.symbols()
    blacklist = build_blacklist(kelf, symbols)
    funcs = kernel_functions(kelf, symbols, Kallsyms(symbols))
    found = kelf.isa
    kelf.close()
    header: Record = {
        "record": "image", "image": path, "isa": found, "linux_rules": LINUX_VERSION,
        "functions": len(funcs), "blacklist_entries": blacklist.entries,
        "blacklist_skipped": blacklist.skipped,
        "blacklist_ranges": blacklist.count_by_cause(),
    }
    if proofs:
        from kprobe_ref.proofs.cache import cached_status

        cached_status(found, jobs)  # once here; the workers read the cache
    chunks = [funcs[i : i + CHUNK] for i in range(0, len(funcs), CHUNK)]
    args = (path, found, blacklist, proofs, specs or {})
    return header, _records(chunks, args, jobs, len(funcs), progress)


def _records(chunks: list[list[KernelFunction]], args: tuple[Any, ...], jobs: int,
             total: int, progress: Callable[[int, int, int], None] | None
             ) -> Iterator[Record]:
    done = insns = 0

    def report(recs: list[Record]) -> Iterator[Record]:
        nonlocal done, insns
        done += len(recs)
        insns += sum(r.get("instructions", 0) for r in recs)
        if progress is not None:
            progress(done, total, insns)
        yield from recs

    if jobs <= 1:
        _init(*args)
        for c in chunks:
            yield from report(_chunk(c))
        return
    with ProcessPoolExecutor(max_workers=jobs, initializer=_init, initargs=args) as pool:
        pending: list[Future[list[Record]]] = []
        todo = iter(chunks)
        for c in todo:
            pending.append(pool.submit(_chunk, c))
            if len(pending) >= 2 * jobs + 2:
                break
        while pending:
            recs = pending.pop(0).result()
            nxt = next(todo, None)
            if nxt is not None:
                pending.append(pool.submit(_chunk, nxt))
            yield from report(recs)


# -- the command -----------------------------------------------------------------------------------


def _progress_line(stream: TextIO) -> Callable[[int, int, int], None]:
    start = time.monotonic()

    def show(done: int, total: int, insns: int) -> None:
        rate = insns / max(time.monotonic() - start, 1e-6)
        width = 30
        filled = width * done // max(total, 1)
        stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} functions, "
                     f"{insns} instructions, {rate / 1000:.0f}k/s ")
        if done == total:
            stream.write("\n")
        stream.flush()

    return show


def run_kernel_audit(path: str, jobs: int, as_json: bool, fail_on_reject: Iterable[str],
                     out: TextIO, err: TextIO, proofs: bool = True,
                     specs: dict[str, Any] | None = None, isa: str | None = None,
                     show_progress: bool = False) -> int:
    """Audit a kernel image; print JSON lines or a summary; return the exit status (1 on a
    divergence, an error record, or a rejection in a ``fail_on_reject`` function).

    Raises ``InvalidImage`` when ``isa`` is given and the image is of another ISA."""
    progress = _progress_line(err) if show_progress else None
    header, records = audit_kernel(path, jobs, proofs, specs, progress, isa)
    summary = Summary()
    failing = set(fail_on_reject)
    status = 0
    if as_json:
        out.write(json.dumps(header) + "\n")
    for rec in records:
        summary.add(rec)
        if rec["name"] in failing and rec.get("verdicts", {}).get("reject"):
            err.write(f"kprobe-ref: {rec['name']} has instructions that cannot be probed\n")
            status = 1
        if as_json:
            out.write(json.dumps(rec) + "\n")
    if summary.errors or summary.divergent:
        status = 1
    if as_json:
        out.write(json.dumps(summary.as_dict()) + "\n")
    else:
        _human(header, summary, out)
    return status


def _counts(d: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(d.items(), key=lambda kv: -kv[1])) or "none"


def _human(header: Record, s: Summary, out: TextIO) -> None:
    out.write(f"{header['image']} ({header['isa']}, rules of Linux {header['linux_rules']}): "
              f"{s.functions} functions, {s.instructions} instructions\n")
    out.write(f"  verdicts:   {_counts(dict(s.verdicts))}\n")
    out.write(f"  rejections: {_counts(dict(s.rejections))}\n")
    out.write(f"  blacklist (instructions per cause): {_counts(dict(s.blacklist))}\n")
    out.write(f"  functions Linux refuses, per cause: {_counts(dict(s.refused_functions))}\n")
    out.write(f"  blacklist entries per rule: {_counts(header['blacklist_entries'])}")
    if header["blacklist_skipped"]:
        out.write(f" (skipped, not kernel text: {_counts(header['blacklist_skipped'])})")
    out.write("\n")
    if s.proved:
        out.write(f"  rules:      {_counts(dict(s.proved))}\n")
    out.write(f"  fully probeable functions: {s.fully_probeable}\n")
    out.write(f"  Linux allows, an instruction cannot be probed: {s.allowed_not_probeable}"
              f"{_eg(s, 'allowed_not_probeable')}\n")
    out.write(f"  Linux refuses, every instruction could be probed: {s.refused_probeable}"
              f"{_eg(s, 'refused_probeable')}\n")
    out.write(f"  functions with undecodable bytes: {s.undecoded}{_eg(s, 'undecoded')}\n")
    out.write(f"  errors: {s.errors}; divergences: {s.divergent}\n")


def _eg(s: Summary, what: str) -> str:
    names = s.examples.get(what)
    return f" (e.g. {', '.join(names[:5])})" if names else ""
