"""Auditing a whole Linux kernel image.

- :mod:`~kprobe_ref.tools.kernel_audit.host`: a read-only host over the image file;
- :mod:`~kprobe_ref.tools.kernel_audit.fastpath`: verdicts for every instruction of a
  function from bulk decoding and a verdict cache, equal to
  :func:`~kprobe_ref.manager.check_probe`'s;
- :mod:`~kprobe_ref.tools.kernel_audit.whole`: the whole-image audit (every function symbol,
  in parallel, streamed, summarised).
"""
