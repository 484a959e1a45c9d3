"""Z3 models of the instruction classes kprobe-ref simulates or relocates.

One module per ISA, written from the architecture manuals and independently of
``kprobe_ref.arch``: each class has its encoding predicate over symbolic fields and its
semantics over a symbolic instruction address, registers, flags and memory.  Installed as
``kprobe_ref.models``.
"""
