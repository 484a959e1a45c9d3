"""Run the ``kprobe-ref`` command: ``python -m kprobe_ref``."""

from kprobe_ref.tools.cli import main

raise SystemExit(main())
