"""``kprobe-ref audit``: which instructions of a compiled image can be probed, how, and why not.

For every instruction of every function in an image's symbol table the audit gives the
verdict registration would reach (simulate, step out of line, reject), the rule (decode
class) and its stable reason code, computed exactly as ``register_kprobe`` computes it
(:func:`kprobe_ref.manager.check_probe`: alignment, instruction boundary, exclusive
sequences, the decode table).  For functions it can run, it also *verifies*: a probe at each
instruction leaves the return value and memory equal to the unprobed run, and its hit count
equals the number of times the instruction executes unprobed.

A function can run when an inputs file gives argument lists for it (the format of
``kprobe_ref/corpus/functions.json``, see :mod:`kprobe_ref.tools.verify`), or when the image's
DWARF information shows it takes only integer arguments; then inputs are drawn from a
generator seeded by the function's name, so runs are reproducible.  Other functions get static
verdicts only.  Functions are audited in parallel over ``jobs`` worker processes.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TextIO

from kprobe_ref.errors import InvalidImage, InvalidProbeDefinition, KprobeError
from kprobe_ref.manager import check_probe
from kprobe_ref.sim.elf import read_image
from kprobe_ref.tools.verify import Case, FunctionSpec, Runner, SiteResult
from kprobe_ref.tools.workers import worker_pool

__all__ = [
    "FunctionReport",
    "InstructionReport",
    "audit_image",
    "draw_cases",
    "integer_only_functions",
]

DRAWN_CASES = 4
EDGE_VALUES = (0, 1, -1, 2, 0x7FFF_FFFF, -0x8000_0000, 0x7FFF_FFFF_FFFF_FFFF, 255)


@dataclass
class InstructionReport:
    """One instruction's verdict and, if run, its verification."""

    address: int
    offset: int
    text: str
    verdict: str
    rule: str
    reason: str
    proved: bool | None = None
    """Whether the rule is proved by the obligations ``kprobe-ref prove`` runs (``None``:
    rejected, or proofs not consulted)."""
    verified: str = "not-run"
    """``ok``, ``divergent``, ``not-run`` (no inputs, or rejected)."""
    hits: int = 0
    divergences: list[str] = field(default_factory=list)


@dataclass
class FunctionReport:
    """One function's instructions."""

    name: str
    address: int
    size: int
    cases: int
    inputs: str
    """Where the inputs came from: ``file``, ``drawn``, or ``none``."""
    instructions: list[InstructionReport] = field(default_factory=list)
    error: str | None = None


# -- inputs -----------------------------------------------------------------------------------


def _int_type(die: object) -> bool | None:
    """Whether a DWARF type DIE is an integer (following typedefs and qualifiers)."""
    seen = 0
    while die is not None and seen < 16:
        tag = die.tag  # type: ignore[attr-defined]
        if tag == "DW_TAG_base_type":
            enc = die.attributes.get("DW_AT_encoding")  # type: ignore[attr-defined]
            return enc is not None and enc.value in (2, 5, 6, 7, 8)  # bool, (un)signed (char)
        if tag in ("DW_TAG_typedef", "DW_TAG_const_type", "DW_TAG_volatile_type",
                   "DW_TAG_enumeration_type"):
            if tag == "DW_TAG_enumeration_type":
                return True
            if "DW_AT_type" not in die.attributes:  # type: ignore[attr-defined]
                return False
            die = die.get_DIE_from_attribute("DW_AT_type")  # type: ignore[attr-defined]
            seen += 1
            continue
        return False
    return None


def integer_only_functions(path: Path | str) -> dict[str, int]:
    """Functions whose parameters are all integers, by name -> parameter count, from the
    image's DWARF information (empty when it has none)."""
    from elftools.elf.elffile import ELFFile

    out: dict[str, int] = {}
    with open(path, "rb") as fh:
        elf = ELFFile(fh)
        if not elf.has_dwarf_info():
            return out
        for cu in elf.get_dwarf_info().iter_CUs():
            for die in cu.iter_DIEs():
                if die.tag != "DW_TAG_subprogram" or "DW_AT_name" not in die.attributes:
                    continue
                params = [c for c in die.iter_children() if c.tag == "DW_TAG_formal_parameter"]
                if any(c.tag == "DW_TAG_unspecified_parameters" for c in die.iter_children()):
                    continue
                kinds = [_int_type(p.get_DIE_from_attribute("DW_AT_type"))
                         if "DW_AT_type" in p.attributes else False for p in params]
                if all(kinds):
                    out[die.attributes["DW_AT_name"].value.decode()] = len(params)
    return out


def _integer_only_or_refuse(path: str) -> dict[str, int]:
    """:func:`integer_only_functions`, with malformed DWARF information refused as an
    ``InvalidImage`` instead of failing somewhere inside the DWARF reader."""
    try:
        return integer_only_functions(path)
    except (OSError, RecursionError, MemoryError) as exc:
        raise InvalidImage(f"{path}: cannot read its DWARF information ({exc})") from None
    except Exception as exc:  # the DWARF reader raises many types on corrupt input
        raise InvalidImage(f"{path}: malformed DWARF information "
                           f"({type(exc).__name__}: {exc})") from None


def draw_cases(name: str, arity: int, count: int = DRAWN_CASES) -> tuple[Case, ...]:
    """Reproducible integer argument lists for ``name``: edge values, then random ones."""
    rng = random.Random(f"kprobe-ref audit {name}")
    cases = []
    for i in range(count):
        if i < 2:
            args = tuple(EDGE_VALUES[(i * 3 + j) % len(EDGE_VALUES)] for j in range(arity))
        else:
            args = tuple(rng.randrange(-(1 << 15), 1 << 15) for _ in range(arity))
        cases.append(Case(args))
    return tuple(cases)


# -- one function (runs in a worker process) ----------------------------------------------------

_RUNNERS: dict[tuple[str, str], Runner] = {}


def _runner(isa: str, image: str) -> Runner:
    key = (isa, image)
    if key not in _RUNNERS:
        _RUNNERS[key] = Runner(isa, image)
    return _RUNNERS[key]


def _static(r: Runner, name: str) -> list[InstructionReport]:
    start = r.image.functions[name]
    out = []
    for addr in r.instructions(name):
        text = r.m.arch.decode(r.m.read(addr, r.m.arch.max_insn_len), addr, False).text
        try:
            d = check_probe(r.m.manager, r.m.points, addr).decoded
            verdict, rule, reason = d.verdict.value, d.klass, d.reason
        except KprobeError as exc:
            verdict, rule = "reject", type(exc).__name__
            reason = getattr(exc, "reason", "invalid-address")
        out.append(InstructionReport(addr, addr - start, text, verdict, rule, reason))
    return out


def _verify(r: Runner, name: str, cases: tuple[Case, ...],
            reports: list[InstructionReport]) -> None:
    baseline, totals = r.baseline(name, cases)
    for rep in reports:
        if rep.verdict == "reject":
            continue
        res: SiteResult = r.probe_site(name, rep.address, cases, baseline, totals[rep.address])
        rep.hits = res.hits
        rep.divergences = res.divergences
        rep.verified = "ok" if res.ok else "divergent"


def audit_function(isa: str, image: str, name: str, cases: tuple[Case, ...] | None,
                   inputs: str) -> FunctionReport:
    """Audit one function: static verdicts, then verification when ``cases`` are given."""
    r = _runner(isa, image)
    rep = FunctionReport(name, r.image.functions[name], r.image.sizes[name],
                         len(cases or ()), inputs)
    try:
        rep.instructions = _static(r, name)
        if cases:
            _verify(r, name, cases, rep.instructions)
    except KprobeError as exc:
        rep.error = str(exc)
    return rep


# -- a whole image --------------------------------------------------------------------------------


def _plan(path: str, isa: str, names: Iterable[str], specs: dict[str, FunctionSpec]
          ) -> list[tuple[str, tuple[Case, ...] | None, str]]:
    ints = _integer_only_or_refuse(path)
    plan: list[tuple[str, tuple[Case, ...] | None, str]] = []
    for name in names:
        spec = specs.get(name)
        if spec is not None and spec.cases and spec.callable:
            plan.append((name, spec.cases, "file"))
        elif spec is None and name in ints:
            plan.append((name, draw_cases(name, ints[name]), "drawn"))
        else:
            plan.append((name, None, "none"))
    return plan


def audit_image(
    path: Path | str,
    isa: str | None = None,
    functions: Iterable[str] = (),
    specs: dict[str, FunctionSpec] | None = None,
    jobs: int = 1,
    verify: bool = True,
    progress: Callable[[int, int, str], None] | None = None,
) -> tuple[str, list[FunctionReport]]:
    """Audit ``path``; returns its ISA and a report per function, in address order.

    Raises ``KprobeError`` for an unreadable image, a wrong ISA or an unknown function."""
    image = read_image(path, isa)
    wanted = list(functions) or sorted(image.functions, key=image.functions.__getitem__)
    unknown = [n for n in wanted if n not in image.functions]
    if unknown:
        raise InvalidProbeDefinition(f"no function {unknown[0]!r} in {path}")
    plan = _plan(str(path), image.isa, wanted, specs or {})
    if not verify:
        plan = [(n, None, "none") for n, _, _ in plan]
    reports: list[FunctionReport] = []
    done = 0

    def record(rep: FunctionReport) -> None:
        nonlocal done
        reports.append(rep)
        done += 1
        if progress is not None:
            progress(done, len(plan), rep.name)

    if jobs <= 1:
        for name, cases, src in plan:
            record(audit_function(image.isa, str(path), name, cases, src))
    else:
        with worker_pool(jobs) as pool:
            futures = [pool.submit(audit_function, image.isa, str(path), n, c, s)
                       for n, c, s in plan]
            for fut in futures:
                record(fut.result())
    reports.sort(key=lambda f: f.address)
    return image.isa, reports


def mark_proved(isa: str, reports: list[FunctionReport], jobs: int) -> None:
    """Fill in each instruction's ``proved`` from the ISA's proof obligations."""
    from kprobe_ref.proofs.status import ProofStatus

    status = ProofStatus(isa, jobs)
    for f in reports:
        for i in f.instructions:
            i.proved = status.rule(i.verdict, i.rule)


def summarize(reports: list[FunctionReport]) -> dict[str, object]:
    """Counts per verdict, per reason of rejection, of proved rules and of verification
    outcomes."""
    insns = [i for f in reports for i in f.instructions]
    return {
        "functions": len(reports),
        "instructions": len(insns),
        "verdicts": dict(Counter(i.verdict for i in insns)),
        "proved": dict(Counter({True: "proved", False: "unproved", None: "n/a"}[i.proved]
                               for i in insns)),
        "rejections": dict(Counter(i.reason for i in insns if i.verdict == "reject")),
        "verified": dict(Counter(i.verified for i in insns)),
        "divergent": sum(i.verified == "divergent" for i in insns),
    }


def as_json(isa: str, path: str, reports: list[FunctionReport]) -> dict[str, object]:
    """The machine-readable report."""
    return {"image": path, "isa": isa, "summary": summarize(reports),
            "functions": [asdict(f) for f in reports]}


# -- the command --------------------------------------------------------------------------------


def _progress_bar(stream: TextIO) -> Callable[[int, int, str], None]:
    def show(done: int, total: int, name: str) -> None:
        width = 30
        filled = width * done // max(total, 1)
        stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {name[:30]:30}")
        if done == total:
            stream.write("\n")
        stream.flush()

    return show


NOT_RUN_HINT = (
    "  no function was run, so no verdict is verified by execution.  To verify: give\n"
    "  argument lists with --inputs FILE (JSON in the format of\n"
    "  kprobe_ref/corpus/functions.json: {\"f\": {\"args\": [\"int\"], \"cases\": [[5]]}}),\n"
    "  or build the image with -g so its DWARF shows which functions take only integer\n"
    "  arguments (those get drawn inputs).\n"
)
"""What a report without any run says about getting verified runs."""


def _human(isa: str, path: str, reports: list[FunctionReport], out: TextIO) -> None:
    from kprobe_ref.reasons import REASONS

    s = summarize(reports)
    out.write(f"{path} ({isa}): {s['functions']} functions, {s['instructions']} instructions\n")
    out.write(f"  verdicts: {_counts(s['verdicts'])}\n")
    out.write(f"  rules:    {_counts(s['proved'])}\n")
    out.write(f"  verified: {_counts(s['verified'])}\n")
    if not any(i.verified != "not-run" for f in reports for i in f.instructions):
        out.write(NOT_RUN_HINT)
    out.write(f"  {'function':28} {'insns':>5} {'sim':>4} {'step':>4} {'rej':>4} {'prv':>4} "
              f"{'ok':>4} {'div':>4}  inputs\n")
    for f in reports:
        c = Counter(i.verdict for i in f.instructions)
        v = Counter(i.verified for i in f.instructions)
        proved = sum(i.proved is True for i in f.instructions)
        out.write(f"  {f.name[:28]:28} {len(f.instructions):5} {c['simulate']:4} {c['step']:4} "
                  f"{c['reject']:4} {proved:4} {v['ok']:4} {v['divergent']:4}  {f.inputs}"
                  f"{' (' + str(f.cases) + ' cases)' if f.cases else ''}\n")
    for f in reports:
        for i in f.instructions:
            if i.verdict == "reject":
                why = REASONS.get(i.reason, i.reason)
                out.write(f"  rejected {f.name}+{i.offset:#x} {i.text}: {i.reason}: {why}\n")
            for d in i.divergences:
                out.write(f"  DIVERGENT {f.name}+{i.offset:#x} {i.text}: {d}\n")
        if f.error:
            out.write(f"  error in {f.name}: {f.error}\n")


def _counts(d: object) -> str:
    assert isinstance(d, dict)
    return ", ".join(f"{k} {v}" for k, v in sorted(d.items())) or "none"


def run(
    images: list[tuple[str, str | None, dict[str, FunctionSpec]]],
    functions: list[str],
    jobs: int,
    as_json_output: bool,
    fail_on_reject: list[str],
    out: TextIO,
    err: TextIO,
    proofs: bool = True,
) -> int:
    """Audit each (image, isa, specs); print; return the exit status (1 on a divergence or
    a rejection inside a ``fail_on_reject`` function)."""
    import json

    status, documents = 0, []
    for path, isa, specs in images:
        progress = _progress_bar(err) if err.isatty() and not as_json_output else None
        found_isa, reports = audit_image(path, isa, functions, specs, jobs, progress=progress)
        if proofs:
            mark_proved(found_isa, reports, jobs)
        if as_json_output:
            documents.append(as_json(found_isa, path, reports))
        else:
            _human(found_isa, path, reports, out)
        if summarize(reports)["divergent"]:
            status = 1
        for f in reports:
            if f.name in fail_on_reject and any(i.verdict == "reject" for i in f.instructions):
                err.write(f"kprobe-ref: {f.name} has instructions that cannot be probed\n")
                status = 1
    if as_json_output:
        out.write(json.dumps(documents if len(documents) > 1 else documents[0], indent=1) + "\n")
    return status
