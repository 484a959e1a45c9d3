"""Probe events in the kernel's ``kprobe_events`` syntax, recorded in ftrace format.

- :mod:`kprobe_ref.trace.grammar`: the definition grammar and its errors (Linux 6.12);
- :mod:`kprobe_ref.trace.fetch`: running fetch-argument programs at a hit;
- :mod:`kprobe_ref.trace.format`: ftrace lines, JSON, the profile tables;
- :mod:`kprobe_ref.trace.session`: events registered on a machine, recorded by the probes'
  handlers;
- :mod:`kprobe_ref.trace.runner` and :mod:`kprobe_ref.trace.command`: ``kprobe-ref trace``.
"""
