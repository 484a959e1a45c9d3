"""Reading a Linux kernel image (vmlinux) the way the kernel sees itself.

- :mod:`~kprobe_ref.kernel.elfscan`: sections, symbols and ``RELATIVE`` relocations straight
  from the ELF file, fast enough for a 150,000-symbol image;
- :mod:`~kprobe_ref.kernel.blacklist`: the addresses Linux refuses to probe
  (``populate_kprobe_blacklist`` and ``check_kprobe_address_safe``);
- :mod:`~kprobe_ref.kernel.fastpath`: verdicts for every instruction of a function from bulk
  decoding and a verdict cache, equal to :func:`~kprobe_ref.manager.check_probe`'s;
- :mod:`~kprobe_ref.kernel.whole`: the whole-image audit (every function symbol, in parallel,
  streamed, summarised).
"""
