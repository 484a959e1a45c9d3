"""Corrections to Ghidra's SLEIGH specifications, one module per ISA that needs them.

Each module has a table ``OVERRIDES`` of instructions named by 32-bit patterns from the
ISA's manual, a ``lookup(word)`` and a Protocol naming what an override may touch of the
CPU (:class:`aarch64.Aarch64View`, :class:`loongarch64.LoongArchView`).  The ISA records
(:mod:`kprobe_ref.sim.pcode.isa`) implement those views over the P-code CPU.
"""
