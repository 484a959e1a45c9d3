"""The user-facing tools built on the engine.

Nothing in the engine (``kprobe_ref`` top level, :mod:`kprobe_ref.arch`, :mod:`kprobe_ref.sim`)
imports from here; a port reads the engine alone.

- :mod:`~kprobe_ref.tools.cli`: the ``kprobe-ref`` command line;
- :mod:`~kprobe_ref.tools.verify`: probed-versus-unprobed runs of a function on given inputs;
- :mod:`~kprobe_ref.tools.audit`: every instruction of every function of an image, probed;
- :mod:`~kprobe_ref.tools.kernel_audit`: verdicts over a whole vmlinux;
- :mod:`~kprobe_ref.tools.demo`, :mod:`~kprobe_ref.tools.docgen`,
  :mod:`~kprobe_ref.tools.trace`, :mod:`~kprobe_ref.tools.sweep`,
  :mod:`~kprobe_ref.tools.conformance`: the demonstration, the generated decode-table
  pages, tracing, the decoder sweep and the conformance vectors;
- :mod:`~kprobe_ref.tools.workers`: worker processes that never outlive their parent.
"""
