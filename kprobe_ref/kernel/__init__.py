"""Reading a Linux kernel image (vmlinux) the way the kernel sees itself.

- :mod:`~kprobe_ref.kernel.elfscan`: sections, symbols and ``RELATIVE`` relocations straight
  from the ELF file, fast enough for a 150,000-symbol image;
- :mod:`~kprobe_ref.kernel.blacklist`: the addresses Linux refuses to probe
  (``populate_kprobe_blacklist`` and ``check_kprobe_address_safe``);
- the whole-image audit that uses them lives in :mod:`kprobe_ref.tools.kernel_audit`.
"""
