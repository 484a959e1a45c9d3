"""The P-code interpreter CPU backend: one guest CPU for all four ISAs.

unicorn has no LoongArch, so the simulated machine has a second backend that interprets
Ghidra's P-code (SLEIGH specifications, through pypcode).  It is also an independent second
CPU for x86_64, aarch64 and riscv64, which the tests compare against unicorn.

The package, in reading order:

- :mod:`.trap`: :class:`Trap`, how an instruction stops the CPU, and :class:`PcodeFault`;
- :mod:`.memory`: sparse pages with permissions;
- :mod:`.state`: varnodes, the :class:`State` protocol and the :class:`IntegerState`;
- :mod:`.ops`: what each P-code operation computes (through :mod:`kprobe_ref.bits`);
- :mod:`.fast`: the concrete fast path, one instruction as one generated function;
- :mod:`.compiler`: one instruction's P-code compiled into closures (and the fast path);
- :mod:`.isa`: one record per ISA, everything the CPU does differently per ISA;
- :mod:`.overrides`: corrections to Ghidra's specifications (LoongArch, aarch64);
- :mod:`.cpu`: :class:`PcodeCpu`, the fetch/translate/run loop.

How one instruction runs:

1. The PC's page must be mapped executable.  The instruction is looked up in the
   translation cache; on a miss its bytes are fetched (at most 16, never across a page the
   guest may not execute), translated with ``max_instructions=1`` and compiled: each P-code
   op becomes a small closure over a :class:`State`, and the whole instruction also becomes
   one generated function over plain integers (:mod:`.fast`) unless it needs the closures.
   Translations are shared by every CPU of the ISA.  Where the ISA record has overrides,
   the word first goes through them (:mod:`.overrides.loongarch64`,
   :mod:`.overrides.aarch64`), which replace Ghidra's P-code where the specification is
   wrong.
2. The generated function runs, computing what the closures compute and returning the
   next PC; or the closures run in order.  Each returns the index of the next op, or
   ``EXIT`` after it set ``State.next_pc`` (a branch out of the instruction).  Relative
   branches (a target in the constant space) move inside the instruction's op list.
3. Traps (breakpoints, system calls, faults, unimplemented operations) raise
   :class:`Trap`; the run loop turns it into a :class:`~kprobe_ref.sim.cpu.Stop` whose
   ``pc`` is the address of the instruction.  A faulting instruction may leave the
   registers it wrote before the fault written (the machine treats a fault as fatal).

In the closures every arithmetic and logic operation goes through :mod:`kprobe_ref.bits`,
and all values flow through the :class:`State` protocol, so a symbolic state can later run
the same compiled ops; the generated functions are their concrete equivalent.
Floating-point ops are concrete only (IEEE single and double through ``struct``).  The
user-defined operations (``CALLOTHER``) each ISA implements are listed in its record
(:data:`CALLOTHERS` gathers them); anything else stops the CPU with a FAULT naming it.
"""

from __future__ import annotations

from kprobe_ref.sim.pcode.compiler import EXIT
from kprobe_ref.sim.pcode.cpu import PcodeCpu
from kprobe_ref.sim.pcode.isa import ISAS, IsaRecord
from kprobe_ref.sim.pcode.memory import PAGE_SIZE, Memory
from kprobe_ref.sim.pcode.ops import CallOther
from kprobe_ref.sim.pcode.state import IntegerState, Space, State, Vn
from kprobe_ref.sim.pcode.trap import PcodeFault, Trap

__all__ = [
    "CALLOTHERS",
    "EXIT",
    "ISAS",
    "LANGUAGES",
    "PAGE_SIZE",
    "CallOther",
    "IntegerState",
    "IsaRecord",
    "Memory",
    "PcodeCpu",
    "PcodeFault",
    "Space",
    "State",
    "Trap",
    "Vn",
]

LANGUAGES: dict[str, str] = {name: r.language for name, r in ISAS.items()}
"""The SLEIGH language of each ISA."""

CALLOTHERS: dict[str, dict[str, CallOther]] = {
    name: dict(r.callothers) for name, r in ISAS.items()
}
"""Every CALLOTHER the interpreter implements, per ISA.  Any other one stops with a FAULT
"unimplemented CALLOTHER <name> in <mnemonic> at <pc>"."""
