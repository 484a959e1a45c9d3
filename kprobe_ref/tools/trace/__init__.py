"""Probe events in the kernel's ``kprobe_events`` syntax, recorded in ftrace format.

- :mod:`kprobe_ref.tools.trace.grammar`: the definition grammar and its errors (Linux 6.12);
- :mod:`kprobe_ref.tools.trace.fetch`: running fetch-argument programs at a hit;
- :mod:`kprobe_ref.tools.trace.format`: ftrace lines, JSON, the profile tables;
- :mod:`kprobe_ref.tools.trace.session`: events registered on a machine, recorded by the probes'
  handlers;
- :mod:`kprobe_ref.tools.trace.runner` and :mod:`kprobe_ref.tools.trace.command`:
  ``kprobe-ref trace``.
"""
