"""``kprobe-ref reloc``: the verdict for one instruction and the proof behind it.

For a simulated instruction the class's ``simulate`` obligation is specialised to the
given bytes and address and proved for every register state and memory.  For an x86_64
RIP-relative operand stepped in a slot, the relocation claim is specialised to the
(address, slot, displacement, length): proved when the rewritten displacement fits, else
the counterexample shows the two effective addresses.  For a fixed-width instruction
stepped unchanged, the word is checked against every PC-using class of the model.
"""

from __future__ import annotations

from typing import TextIO

import z3

from kprobe_ref.arch import get_arch
from kprobe_ref.arch.base import Decoded, Verdict
from kprobe_ref.bits import to_signed
from kprobe_ref.models import MODULES, model
from kprobe_ref.proofs.core import Result, prove
from kprobe_ref.proofs.relocate import rip_claim
from kprobe_ref.proofs.simulate import specialised, x86_specialised

__all__ = ["explain"]

PROVED = "proved for all register states"


def _simulated(isa: str, d: Decoded) -> Result:
    if isa == "x86_64":
        return x86_specialised(d)
    return specialised(isa, d.klass, int.from_bytes(d.raw, "little"), d.address)


OUT_OF_REACH = "out-of-reach"


def _rip(d: Decoded, slot: int) -> tuple[Result, str]:
    """The relocation of a RIP-relative displacement into the slot: proved when the new
    displacement fits in 32 signed bits; otherwise the expected refusal (registration
    raises ``OutOfReach``), with both displacements signed."""
    disp = int.from_bytes(d.raw[d.fields["disp_offset"]:][:4], "little")
    pre, same = rip_claim(d.address, slot, disp, d.length)
    old = to_signed(disp, 32)
    new = old + d.address - slot
    if z3.simplify(pre).eq(z3.BoolVal(True)):
        return prove(same), f"slot {slot:#x}: displacement {old:+#x} -> {new:+#x}"
    mask = (1 << 64) - 1
    target = (d.address + d.length + old) & mask
    detail = {"addr": hex(d.address), "slot": hex(slot), "displacement": f"{old:+#x}",
              "needed_displacement": f"{new:+#x}", "target": hex(target),
              "signed_32_bit_range": "-0x80000000..+0x7fffffff"}
    return Result(False, 0.0, detail, OUT_OF_REACH), (
        f"slot {slot:#x}: displacement {old:+#x} -> {new:+#x} does not fit in 32 signed bits"
    )


def _plain_fixed(isa: str, d: Decoded) -> Result:
    w = int.from_bytes(d.raw, "little")
    hits = [name for name, (width, pred) in model(isa).PC_CLASSES.items()
            if width == 8 * d.length and pred(w) is True]
    if hits:
        return Result(False, 0.0, {"word": hex(w), "pc_class": hits[0]},
                      "stepped unchanged but the model says it uses the PC")
    return Result(True, 0.0, None, "uses no PC: copied unchanged")


def explain(out: TextIO, isa: str, code: bytes, addr: int, slot: int | None) -> int:
    """Print the verdict, rule and proof; 0 when proved or refused with a reason, 1 when a
    counterexample exists."""
    d = get_arch(isa).decode(code, addr, False)
    out.write(f"instruction: {d.text} ({d.raw.hex()}) at {addr:#x}\n")
    out.write(f"verdict:     {d.verdict.value}\nrule:        class {d.klass}, reason "
              f"{d.reason}\n")
    if d.verdict is Verdict.REJECT:
        out.write("proof:       none needed (refused at registration)\n")
        return 0
    note = ""
    if isa not in MODULES:
        out.write(f"proof:       none yet: {isa} has no model (see docs/proofs.md)\n")
        return 0
    if d.verdict is Verdict.SIMULATE:
        result = _simulated(isa, d)
    elif "disp_offset" in d.fields:
        result, note = _rip(d, addr + 0x1000 if slot is None else slot)
    elif isa == "x86_64":
        result = Result(True, 0.0, None, "no RIP-relative operand: copied unchanged")
    else:
        result = _plain_fixed(isa, d)
    if note:
        out.write(f"relocation:  {note}\n")
    if result.detail == OUT_OF_REACH:
        out.write("proof:       none needed: an expected refusal.  Registration raises "
                  "OutOfReach for this slot (a kernel allocates slots within +-2 GiB of the "
                  "probe; a user slot reaches the target through a scratch register)\n")
        for k, v in (result.counterexample or {}).items():
            out.write(f"    {k} = {v}\n")
        return 0
    if result.proved:
        out.write(f"proof:       {PROVED} ({result.detail or 'Z3'})\n")
        return 0
    out.write(f"proof:       counterexample: {result.detail}\n")
    for k, v in (result.counterexample or {}).items():
        out.write(f"    {k} = {v}\n")
    return 1
