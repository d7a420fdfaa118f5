"""One log line per operation: its fields, its duration and its outcome (``ok``, the stable
code of an expected error, or ``crash:<type>`` at ERROR for anything else). Each side passes
its own error family as ``expected``: this module knows neither."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager


def outcome_of(error: BaseException | None, expected: type[Exception]) -> str:
    """``ok``, the code of an ``expected`` error, or ``crash:<type>`` for anything else."""
    if error is None:
        return "ok"
    if isinstance(error, expected):
        return str(getattr(error, "code", type(error).__name__))
    return f"crash:{type(error).__name__}"


@contextmanager
def logged(logger: logging.Logger, expected: type[Exception], message: str,
           *args: object) -> Iterator[None]:
    """When the block ends, log ``message % args`` with its duration and outcome: ``ok``,
    the code of an ``expected`` error, or ``crash:<type>`` (at ERROR) for anything else."""
    start = time.monotonic()
    outcome = "ok"
    try:
        yield
    except Exception as exc:
        outcome = outcome_of(exc, expected)
        raise
    finally:
        level = logging.ERROR if outcome.startswith("crash") else logging.INFO
        logger.log(level, message + " duration_ms=%.1f outcome=%s", *args,
                   (time.monotonic() - start) * 1000, outcome)
