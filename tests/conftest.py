"""Shared test configuration: Hypothesis profiles.

- ``dev`` (default): a quick local run.
- ``ci``: derandomized, so CI is reproducible; chosen when ``CI`` is set.
- ``thorough``: many more examples, for long runs by hand
  (``HYPOTHESIS_PROFILE=thorough pytest``).
"""

from __future__ import annotations

import os
import zlib

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "dev", max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "ci",
    max_examples=40,
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "thorough", max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck)
)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev")
)


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--shard I/N``: run only the I-th of N deterministic slices of the collected tests."""
    parser.addoption(
        "--shard",
        default=None,
        metavar="I/N",
        help="run the I-th (0-based) of N slices, chosen by a stable hash of each test id",
    )


def _shard_of(nodeid: str, count: int) -> int:
    """The slice a test belongs to: CRC-32 of its id, so every machine agrees."""
    return zlib.crc32(nodeid.encode()) % count


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the tests outside the chosen ``--shard``."""
    spec = config.getoption("--shard")
    if spec is None:
        return
    try:
        index, count = (int(part) for part in spec.split("/"))
    except ValueError:
        raise pytest.UsageError(f"--shard takes I/N, got {spec!r}") from None
    if not 0 <= index < count:
        raise pytest.UsageError(f"--shard {spec}: I must be in 0..N-1")
    keep = [item for item in items if _shard_of(item.nodeid, count) == index]
    dropped = [item for item in items if _shard_of(item.nodeid, count) != index]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    items[:] = keep
