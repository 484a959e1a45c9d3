"""Run the ``kprobe-ref`` command: ``python -m kprobe_ref``."""

from kprobe_ref.cli import main

raise SystemExit(main())
