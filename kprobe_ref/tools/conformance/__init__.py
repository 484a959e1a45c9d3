"""Conformance vectors: golden test vectors a port of kprobes runs against its own rules.

A vector is one probed instruction at one address with one architectural state: the verdict
and reason code the decode table gives it, for a stepped instruction the slot the reference
builds (relocated where it must be), and the state before and after the instruction, which
both the unprobed and the probed run reach on the simulated machine.  Kretprobe vectors hold
a function's entry state, the hijacked return address and the state after the trampoline.

- :mod:`~kprobe_ref.tools.conformance.schema`: the versioned JSON Lines record format
  (``docs/conformance.md`` documents it);
- :mod:`~kprobe_ref.tools.conformance.layout`: where vectors live in the address space, the
  deterministic contents of data pages, and how registers split into ``regs`` and ``flags``;
- :mod:`~kprobe_ref.tools.conformance.cases`: the candidate instructions of every decode-table row
  at its operand edge cases, built from the rows' own bit patterns;
- :mod:`~kprobe_ref.tools.conformance.check`: running a candidate on the machine, unprobed and
  probed, and turning what both runs agree on into a vector;
- :mod:`~kprobe_ref.tools.conformance.export`: the ``kprobe-ref vectors export`` command.
"""

from __future__ import annotations

from kprobe_ref.tools.conformance.schema import SCHEMA_VERSION

__all__ = ["SCHEMA_VERSION"]
