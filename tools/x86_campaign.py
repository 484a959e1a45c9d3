"""x86_64 classification campaign: the decode table against an independent decoder.

Every encoding of the space below is decoded by kprobe_ref (capstone plus the decode table)
and by iced-x86, which shares no code with capstone.  An encoding fails when

- kprobe_ref steps it out of line and iced calls it a branch, call, return, interrupt or
  transactional instruction (``stepped-control-flow``);
- kprobe_ref steps it unchanged and iced gives it a RIP-relative memory operand
  (``unrelocated-rip``), or relocates a displacement that iced does not call RIP-relative or
  places elsewhere (``wrong-relocation``);
- kprobe_ref simulates it and iced disagrees on its kind, its length, its target or its
  register (``simulation-mismatch``).

Where the two decoders disagree on validity or length, the encoding is run in unicorn at two
addresses with different surroundings (:func:`settle`): whether it faults, how far RIP moves,
and whether registers, data accesses and the next RIP depend on where it runs.  Disagreements
are grouped by key (kind, opcode map, opcode, ModRM form) and each group's first example is
settled.

The space (:func:`space_size`): prefix sequences x the 1,023 opcodes of the one-byte, 0F,
0F38 and 0F3A maps x three ModRM forms (register, RIP-relative, SIB memory) x the eight
ModRM.reg values where reg selects the instruction (iced's instruction code varies with it,
or a row of our table keys on the ModRM byte; one reg value, different for each prefix
sequence, elsewhere), and VEX2/VEX3/EVEX/XOP forms of every opcode under seven prefix
sequences.  Prefix sequences are every sequence of up to four prefixes drawn from ten
classes (66, 67, F0, F2, F3, 2E/3E, 26/36, 64/65, REX, REX.W), repeats allowed, reduced to
one representative per arrangement the CPU can tell apart (the multiset of legacy prefixes,
which of F2/F3 and which segment override comes last, where each REX byte stands): 3,491
sequences.  An opcode whose instruction ends before its ModRM byte (both decoders agree)
is checked with one ModRM form, since the others are the same instruction followed by
different bytes.

Run: ``python tools/x86_campaign.py`` (the exhaustive run; ``--jobs``, ``--limit``,
``--sample N``, ``--write-disagreements`` to refresh ``tests/vectors/x86_disagreements.json``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import random
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import iced_x86 as iced

from kprobe_ref.arch.base import Verdict
from kprobe_ref.arch.x86_64 import decode as x86_decode

__all__ = [
    "ADDR",
    "Result",
    "check",
    "encodings",
    "prefix_sequences",
    "run",
    "settle",
    "space_size",
    "steppable",
]

ADDR = 0x7F00_1234_5000
"""Where the checked encodings are placed (a kernel-like high address)."""

PREFIX_CLASSES: dict[str, tuple[int, ...]] = {
    "66": (0x66,), "67": (0x67,), "F0": (0xF0,), "F2": (0xF2,), "F3": (0xF3,),
    "2E/3E": (0x2E, 0x3E), "26/36": (0x26, 0x36), "64/65": (0x64, 0x65),
    "REX": (0x41, 0x44), "REX.W": (0x48, 0x49),
}  # fmt: skip
"""The prefix classes and their bytes; a class's byte is picked by its position."""

_REX = ("REX", "REX.W")
_SEG = ("2E/3E", "26/36", "64/65")

OPMAPS: tuple[tuple[str, bytes], ...] = (
    ("1byte", b""), ("0f", b"\x0f"), ("0f38", b"\x0f\x38"), ("0f3a", b"\x0f\x3a"),
)  # fmt: skip

DISP = b"\x80\x00\x00\x00"
"""disp32 of the memory forms: small, so unicorn's accesses stay in mapped pages."""
TAIL = bytes.fromhex("0800000000000000")
"""Immediate bytes after the operands (a rel32 of 8, an imm64 of 8)."""


def modrm_forms() -> dict[str, list[bytes]]:
    """The ModRM forms, each with its eight ModRM.reg values: the bytes from ModRM to the
    end of the encoding."""
    return {
        "reg": [bytes([0xC0 | reg << 3 | 1]) + TAIL + TAIL for reg in range(8)],
        "rip": [bytes([0x05 | reg << 3]) + DISP + TAIL for reg in range(8)],
        "mem": [bytes([0x84 | reg << 3, 0x4A]) + DISP + TAIL for reg in range(8)],
    }


FORMS = modrm_forms()


def _cpu_key(seq: Sequence[str]) -> tuple[Any, ...]:
    """What the CPU can tell apart in a prefix sequence (SDM Vol. 2, 2.1.1 and 2.2.1)."""
    legacy = [c for c in seq if c not in _REX]
    reps = [c for c in legacy if c in ("F2", "F3")]
    segs = [c for c in legacy if c in _SEG]
    rex_at = tuple((i, c) for i, c in enumerate(seq) if c in _REX)
    return (tuple(sorted(set(legacy))), len(seq), tuple(reps[-1:]), tuple(segs[-1:]), rex_at,
            tuple(sorted(Counter(legacy).items())))


def prefix_sequences() -> list[bytes]:
    """One byte string per prefix arrangement the CPU can tell apart (see module doc)."""
    names = list(PREFIX_CLASSES)
    seen: dict[tuple[Any, ...], bytes] = {}
    for seq in (s for k in range(5) for s in itertools.product(names, repeat=k)):
        key = _cpu_key(seq)
        if key not in seen:
            seen[key] = bytes(PREFIX_CLASSES[c][i % len(PREFIX_CLASSES[c])]
                              for i, c in enumerate(seq))
    return list(seen.values())


def vex_heads() -> list[tuple[str, bytes]]:
    """VEX2, VEX3 (maps 1-3), XOP (maps 8-A) and EVEX (maps 1-3, 5, 6) escape bytes, over
    W, L and pp, with R/X/B/vvvv set to their no-register values."""
    heads: list[tuple[str, bytes]] = []
    for pp, ll in itertools.product(range(4), range(2)):
        heads.append((f"vex2.L{ll}.pp{pp}", bytes([0xC5, 0xF8 | ll << 2 | pp])))
    for mm, w, ll, pp in itertools.product((1, 2, 3), range(2), range(2), range(4)):
        heads.append((f"vex3.m{mm}.W{w}.L{ll}.pp{pp}",
                      bytes([0xC4, 0xE0 | mm, w << 7 | 0x78 | ll << 2 | pp])))
    for mm, w, ll in itertools.product((8, 9, 10), range(2), range(2)):
        heads.append((f"xop.m{mm}.W{w}.L{ll}", bytes([0x8F, 0xE0 | mm, w << 7 | 0x78 | ll << 2])))
    for mm, w, ll, pp in itertools.product((1, 2, 3, 5, 6), range(2), range(3), range(4)):
        heads.append((f"evex.m{mm}.W{w}.L{ll}.pp{pp}",
                      bytes([0x62, 0xF0 | mm, w << 7 | 0x7C | pp, ll << 5 | 0x08])))
    return heads


VEX_PREFIXES: tuple[bytes, ...] = (b"", b"\x67", b"\x2e", b"\x64", b"\x66", b"\x41", b"\xf3")
"""Prefix sequences put before VEX/EVEX/XOP (66, F3 and REX there make the CPU raise #UD)."""


@dataclass(frozen=True)
class Body:
    """An opcode and where its ModRM forms go: (group key, bytes before ModRM)."""

    key: str
    head: bytes


def bodies() -> list[Body]:
    """Every opcode of the four legacy maps, then every VEX-family opcode."""
    out = [Body(f"{name}:{op:02x}", esc + bytes([op]))
           for name, esc in OPMAPS for op in range(256) if not (name == "1byte" and op == 0x0F)]
    for hname, head in vex_heads():
        family = ".".join(hname.split(".")[:2]) if hname.startswith(("vex3", "xop", "evex")) \
            else "vex2"
        out += [Body(f"{family}:{op:02x}", head + bytes([op])) for op in range(256)]
    return out


def space_size() -> int:
    """Upper bound of encodings in the space (before the one-form shortcut)."""
    legacy = sum(1 for b in bodies() if b.head[0] not in (0xC4, 0xC5, 0x62, 0x8F)
                 or len(b.head) == 1)
    vex = len(bodies()) - legacy
    return (len(prefix_sequences()) * legacy + len(VEX_PREFIXES) * vex) * 24


def encodings(prefixes: Iterable[bytes], body: Body) -> Iterator[tuple[str, bytes]]:
    """(form, encoding) for ``body`` under each prefix sequence (all forms; the shortcut is
    applied by :func:`check_body`)."""
    for pre in prefixes:
        for form, rests in FORMS.items():
            for rest in rests:
                yield form, pre + body.head + rest


# -- one encoding -----------------------------------------------------------------------------

_FLOW_KIND = {
    iced.FlowControl.NEXT: "next",
    iced.FlowControl.UNCONDITIONAL_BRANCH: "jmp",
    iced.FlowControl.INDIRECT_BRANCH: "jmp-indirect",
    iced.FlowControl.CONDITIONAL_BRANCH: "jcc",
    iced.FlowControl.RETURN: "ret",
    iced.FlowControl.CALL: "call",
    iced.FlowControl.INDIRECT_CALL: "call-indirect",
    iced.FlowControl.INTERRUPT: "interrupt",
    iced.FlowControl.XBEGIN_XABORT_XEND: "transactional",
    iced.FlowControl.EXCEPTION: "exception",
}

_SIM_KIND = {
    "jcc_rel8": "jcc", "jcc_rel32": "jcc", "loop": "jcc", "loope": "jcc", "loopne": "jcc",
    "jrcxz": "jcc", "jmp_rel8": "jmp", "jmp_rel32": "jmp", "call_rel32": "call",
    "ret": "ret", "ret_imm16": "ret", "call_ind_reg": "call-indirect",
    "call_ind_mem": "call-indirect", "jmp_ind_reg": "jmp-indirect",
    "jmp_ind_mem": "jmp-indirect",
}  # fmt: skip
"""The iced flow-control kind of each simulated class."""


@dataclass(frozen=True)
class IcedView:
    """What iced-x86 says about an encoding."""

    valid: bool
    length: int
    flow: str
    rip_relative: bool
    disp_offset: int
    target: int | None
    register: int | None
    text: str


_GPR64 = [getattr(iced.Register, n.upper()) for n in (
    "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
    "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")]  # fmt: skip
_FORMATTER = iced.Formatter(iced.FormatterSyntax.INTEL)


def iced_view(code: bytes, addr: int = ADDR, text: bool = False) -> IcedView:
    """Decode ``code`` at ``addr`` with iced-x86."""
    dec = iced.Decoder(64, code, ip=addr)
    ins = dec.decode()
    if ins.code == iced.Code.INVALID:
        return IcedView(False, ins.len, "invalid", False, 0, None, None, "(invalid)")
    target = ins.near_branch_target if ins.op0_kind in (
        iced.OpKind.NEAR_BRANCH64, iced.OpKind.NEAR_BRANCH32, iced.OpKind.NEAR_BRANCH16) else None
    reg = ins.op0_register if ins.op_count == 1 and ins.op0_kind == iced.OpKind.REGISTER else None
    offsets = dec.get_constant_offsets(ins)
    return IcedView(
        True, ins.len, _FLOW_KIND[ins.flow_control], ins.is_ip_rel_memory_operand,
        offsets.displacement_offset if offsets.has_displacement else 0, target,
        _GPR64.index(reg) if reg in _GPR64 else None,
        _FORMATTER.format(ins) if text else "",
    )


@dataclass(frozen=True)
class Result:
    """The outcome of one encoding: our verdict label, and a failure or disagreement kind."""

    verdict: str
    failure: str | None = None
    disagreement: str | None = None
    ours_length: int = 0
    iced_length: int = 0


def verdict_label(d: Any) -> str:
    """The campaign's name for a verdict: ``step-plain``, ``step-rip``, ``simulate``,
    ``reject`` or ``reject-undecodable``."""
    if d.verdict is Verdict.STEP_OUT_OF_LINE:
        return "step-rip" if "disp_offset" in d.fields else "step-plain"
    if d.verdict is Verdict.SIMULATE:
        return "simulate"
    return "reject-undecodable" if d.reason == "undecodable" else "reject"


def _simulation_failure(d: Any, v: IcedView, addr: int) -> str | None:
    if _SIM_KIND[d.klass] != v.flow:
        return "simulation-mismatch"
    f = d.fields
    if "disp" in f:
        disp = f["disp"] - (1 << f["dsize"]) if f["disp"] >> (f["dsize"] - 1) else f["disp"]
        if v.target != (addr + f["len"] + disp) % (1 << 64):
            return "simulation-mismatch"
    if "reg" in f and v.register != f["reg"]:
        return "simulation-mismatch"
    if d.klass.endswith("_mem") and v.rip_relative != (f["base"] == 16):
        return "simulation-mismatch"
    return None


def check(code: bytes, addr: int = ADDR) -> Result:
    """Compare kprobe_ref's verdict on ``code`` at ``addr`` with iced-x86's view."""
    d = x86_decode.decode(code, addr)
    v = iced_view(code, addr)
    label = verdict_label(d)
    ours_len = d.length if label != "reject-undecodable" else 0
    if not v.valid:
        dis = None if label == "reject-undecodable" else "iced-invalid"
        return Result(label, None, dis, ours_len, 0)
    if label == "reject-undecodable":
        return Result(label, None, "capstone-invalid", 0, v.length)
    failure: str | None = None
    if label.startswith("step") and v.flow != "next":
        failure = "stepped-control-flow"
    elif label == "step-plain" and v.rip_relative:
        failure = "unrelocated-rip"
    elif label == "step-rip" and (not v.rip_relative or v.disp_offset != d.fields["disp_offset"]):
        failure = "wrong-relocation"
    elif label == "simulate":
        failure = _simulation_failure(d, v, addr)
    dis = "length" if d.length != v.length else None
    return Result(label, failure, dis, ours_len, v.length)


# -- a chunk of the space -----------------------------------------------------------------------

@dataclass
class Tally:
    """Counts over a part of the space, with the first example of each group."""

    checked: int = 0
    verdicts: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    disagreements: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)

    def add(self, res: Result, group: str, code: bytes) -> None:
        self.checked += 1
        self.verdicts[res.verdict] += 1
        for kind, counter in ((res.failure, self.failures), (res.disagreement,
                                                            self.disagreements)):
            if kind is not None:
                key = f"{kind}|{group}"
                counter[key] += 1
                self.examples.setdefault(key, code.hex())

    def merge(self, other: Tally) -> None:
        self.checked += other.checked
        self.verdicts.update(other.verdicts)
        self.failures.update(other.failures)
        self.disagreements.update(other.disagreements)
        for k, v in other.examples.items():
            self.examples.setdefault(k, v)


def _reg_selects(code_head: bytes, rests: Sequence[bytes], body: Body) -> bool:
    """Whether ModRM.reg selects the instruction (a group opcode) for this head: iced's
    instruction code varies over the eight reg values, or a row of our table keys on the
    ModRM byte of this opcode."""
    opmap = body.key.split(":")[0]
    if any(r.modrm is not None for r in x86_decode._BY_OPCODE.get((opmap, body.head[-1]), ())):
        return True
    first = iced.Decoder(64, code_head + rests[0], ip=ADDR).decode().code
    return any(iced.Decoder(64, code_head + rest, ip=ADDR).decode().code != first
               for rest in rests[1:])


def check_body(tally: Tally, prefixes: Sequence[bytes], body: Body) -> None:
    """Check ``body`` under every prefix sequence and ModRM form.  The eight ModRM.reg
    values of a form are all checked where reg selects the instruction (a group opcode),
    otherwise one of them (a different one for each prefix sequence).  When the first
    instruction ends before the ModRM byte in both decoders, the other forms are the same
    instruction followed by other bytes and are skipped."""
    for pre in prefixes:
        head = pre + body.head
        for n, (_form, rests) in enumerate(FORMS.items()):
            regs = rests if _reg_selects(head, rests, body) else [rests[len(pre) % 8]]
            for rest in regs:
                res = check(head + rest)
                tally.add(res, body.key, head + rest)
            if n == 0 and 0 < res.ours_length <= len(head) and 0 < res.iced_length <= len(head):
                break


def _work(args: tuple[int, int, int | None]) -> Tally:
    start, stop, seed = args
    tally = Tally()
    for body in _BODIES[start:stop]:
        prefixes = _PREFIXES
        if body.head[0] in (0xC4, 0xC5, 0x62, 0x8F) and len(body.head) > 1:
            prefixes = list(VEX_PREFIXES)
        if seed is not None:
            rng = random.Random(seed + start)
            prefixes = [rng.choice(prefixes)]
        check_body(tally, prefixes, body)
    return tally


_BODIES = bodies()
_PREFIXES = prefix_sequences()


N_LEGACY = sum(1 for b in _BODIES if not b.key.startswith(("vex", "xop", "evex")))
"""The legacy-map bodies come first in :func:`bodies`, the VEX family after them."""


def run(jobs: int = 2, limit: int | None = None, sample: int | None = None,
        seed: int = 0, bodies: str = "all", progress: Any = None) -> Tally:
    """Run the campaign over the whole space (or the first ``limit`` bodies, or ``sample``
    random bodies under one random prefix sequence each) on ``jobs`` processes; ``bodies``
    is ``all``, ``legacy`` (the four opcode maps) or ``vex`` (VEX, EVEX, XOP).  With a
    ``progress`` stream, a line of counts goes there every 30 s or so."""
    lo, hi = {"all": (0, len(_BODIES)), "legacy": (0, N_LEGACY),
              "vex": (N_LEGACY, len(_BODIES))}[bodies]
    if limit is not None:
        hi = min(hi, lo + limit)
    if sample is not None:
        rng = random.Random(seed)
        picks = rng.sample(range(lo, hi), min(sample, hi - lo))
        chunks = [(i, i + 1, seed) for i in picks]
    else:
        step = 1 if lo < N_LEGACY else 8
        chunks = [(i, min(i + step, hi), None) for i in range(lo, hi, step)]
    total = Tally()
    if jobs <= 1:
        for c in chunks:
            total.merge(_work(c))
        return total
    t0 = last = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        for done, part in enumerate(pool.imap_unordered(_work, chunks), 1):
            total.merge(part)
            if progress is not None and time.perf_counter() - last > 30:
                last = time.perf_counter()
                rate = total.checked / (time.perf_counter() - t0)
                print(f"{done}/{len(chunks)} chunks, {total.checked:,} encodings, "
                      f"{rate:,.0f}/s, {sum(total.failures.values())} failures",
                      file=progress, flush=True)
    return total


# -- settling a disagreement in unicorn -----------------------------------------------------------

@dataclass(frozen=True)
class Settlement:
    """What unicorn did with an encoding run at two addresses."""

    outcome: str
    """``undefined`` (#UD at both addresses), ``fault`` (another fault at both, after the same
    data accesses), ``independent`` (RIP moved by the same amount, and registers and every
    data access are the same at both addresses), ``nondeterministic`` (two runs at one
    address differ: rdtsc, rdrand) or ``address-dependent``."""
    rip_delta: int | None
    detail: str = ""


_SETTLE_AT = (0x10_0000, 0x3_4567_8000)
_DATA, _STACK = 0x200_0000, 0x300_0000


def _run_once(code: bytes, base: int, fill: int) -> tuple[str, Any]:
    import unicorn
    from unicorn import x86_const as x

    uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
    lo = base - 0x1000
    uc.mem_map(lo, 0x3000)
    uc.mem_write(lo, bytes([fill]) * 0x3000)
    uc.mem_write(base, code)
    uc.mem_map(_DATA, 0x2_0000)
    uc.mem_map(_STACK - 0x1000, 0x2000)
    regs = [x.UC_X86_REG_RAX, x.UC_X86_REG_RCX, x.UC_X86_REG_RDX, x.UC_X86_REG_RBX,
            x.UC_X86_REG_RSP, x.UC_X86_REG_RBP, x.UC_X86_REG_RSI, x.UC_X86_REG_RDI,
            *[getattr(x, f"UC_X86_REG_R{n}") for n in range(8, 16)]]
    for i, r in enumerate(regs):
        uc.reg_write(r, _STACK if i == 4 else _DATA + 0x800 + 0x100 * i)
    accesses: list[tuple[int, int, int, int]] = []

    def hook(_uc: Any, access: int, address: int, size: int, value: int, _d: Any) -> bool:
        accesses.append((access, address, size, value))
        return False

    uc.hook_add(unicorn.UC_HOOK_MEM_READ | unicorn.UC_HOOK_MEM_WRITE, hook)
    uc.hook_add(unicorn.UC_HOOK_MEM_INVALID, hook)
    try:
        uc.emu_start(base, base + 0x2000, count=1)
    except unicorn.UcError as exc:
        kind = "undefined" if exc.errno == unicorn.UC_ERR_INSN_INVALID else "fault"
        return kind, (str(exc), tuple(accesses))
    state = (*tuple(uc.reg_read(r) for r in regs), uc.reg_read(x.UC_X86_REG_EFLAGS))
    return "ran", (uc.reg_read(x.UC_X86_REG_RIP) - base, state, tuple(accesses))


def settle(code: bytes) -> Settlement:
    """Run ``code`` in unicorn at two addresses, with differently filled surroundings, and
    once more at the first to tell nondeterminism from address dependence."""
    (ka, ra), (kb, rb) = (_run_once(code, base, fill)
                          for base, fill in zip(_SETTLE_AT, (0x11, 0x22), strict=True))
    if ka == kb and ka in ("undefined", "fault") and ra == rb:
        return Settlement(ka, None, ra[0])
    if ka == kb == "ran" and ra == rb:
        return Settlement("independent", ra[0])
    if _run_once(code, _SETTLE_AT[0], 0x11) != (ka, ra):
        return Settlement("nondeterministic", None)
    delta = ra[0] if ka == kb == "ran" and ra[0] == rb[0] else None
    return Settlement("address-dependent", delta, f"{ka} / {kb}")


def steppable(settled: Settlement, length: int, code: bytes) -> bool:
    """Whether unicorn's behaviour is what stepping the encoding unchanged needs: it
    faults the same way at both addresses, or runs independently of the address and falls
    through by ``length`` (or stays put: one iteration of a ``rep`` string instruction)."""
    if settled.outcome in ("undefined", "fault", "nondeterministic"):
        return True
    if settled.outcome != "independent":
        return False
    rep = any(b in (0xF2, 0xF3) for b in code[:length])
    return settled.rip_delta == length or (settled.rip_delta == 0 and rep)


# -- report -------------------------------------------------------------------------------------

def _group_kind(key: str) -> str:
    kind, group = key.split("|", 1)
    return f"{kind} {group.split(':')[0].split('.')[0]}"


def settled_groups(tally: Tally) -> list[dict[str, Any]]:
    """Every disagreement and failure group with its count, example, both decoders' views,
    our verdict and unicorn's settlement."""
    out = []
    for key, count in sorted({**tally.disagreements, **tally.failures}.items()):
        code = bytes.fromhex(tally.examples[key])
        d = x86_decode.decode(code, ADDR)
        v = iced_view(code, ADDR, text=True)
        s = settle(code[: max(d.length, v.length, 1)] if d.reason != "undecodable" else code)
        out.append({
            "group": key, "count": count, "example": code.hex(),
            "ours": {"verdict": verdict_label(d), "reason": d.reason, "length": d.length,
                     "text": d.text},
            "iced": {"valid": v.valid, "length": v.length, "flow": v.flow, "text": v.text},
            "unicorn": {"outcome": s.outcome, "rip_delta": s.rip_delta,
                        "steppable": steppable(s, d.length, code)},
        })
    return out


def report(tally: Tally, seconds: float, out: Any = sys.stdout) -> None:
    """Print the campaign's counts."""
    print(f"encodings checked: {tally.checked:,} in {seconds:.1f} s", file=out)
    for name, n in sorted(tally.verdicts.items()):
        print(f"  verdict {name:20} {n:>12,}", file=out)
    fails = sum(tally.failures.values())
    print(f"failures: {fails:,} in {len(tally.failures)} groups", file=out)
    for key, n in sorted(tally.failures.items())[:40]:
        print(f"  {key:50} {n:>9,}  e.g. {tally.examples[key]}", file=out)
    by_kind: Counter[str] = Counter()
    for key, n in tally.disagreements.items():
        by_kind[_group_kind(key)] += n
    print(f"disagreements: {sum(by_kind.values()):,} in {len(tally.disagreements)} groups",
          file=out)
    for kind, n in sorted(by_kind.items()):
        print(f"  {kind:40} {n:>12,}", file=out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--limit", type=int, default=None, help="only the first N opcode bodies")
    ap.add_argument("--sample", type=int, default=None,
                    help="N random bodies under one random prefix sequence each")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bodies", choices=("all", "legacy", "vex"), default="all")
    ap.add_argument("--write-disagreements", type=Path, default=None,
                    help="write every group, settled in unicorn, as JSON")
    args = ap.parse_args(argv)
    print(f"space: {len(_PREFIXES)} prefix sequences, {len(_BODIES)} opcode bodies, "
          f"3 ModRM forms x 8 reg values; at most {space_size():,} encodings")
    t0 = time.perf_counter()
    tally = run(args.jobs, args.limit, args.sample, args.seed, args.bodies, sys.stderr)
    report(tally, time.perf_counter() - t0)
    if args.write_disagreements is not None:
        groups = settled_groups(tally)
        args.write_disagreements.write_text(json.dumps(groups, indent=1) + "\n")
        print(f"wrote {len(groups)} settled groups to {args.write_disagreements}")
    return 1 if tally.failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
