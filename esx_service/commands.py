"""Running host tools (losetup and friends) behind one small seam tests can replace."""

from __future__ import annotations

import subprocess
from typing import Protocol

from .errors import BackendError


class CommandRunner(Protocol):
    def __call__(self, argv: list[str], timeout: float = 60.0) -> str:
        """Run argv; return stdout; raise BackendError naming the command on failure."""


def run_command(argv: list[str], timeout: float = 60.0) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise BackendError(f"{argv[0]} is not installed: {exc}") from exc
    except subprocess.TimeoutExpired as exc:
        raise BackendError(f"{' '.join(argv)} timed out after {timeout:.0f}s") from exc
    if done.returncode != 0:
        raise BackendError(
            f"{' '.join(argv)} failed (exit {done.returncode}): {done.stderr.strip()}"
        )
    return done.stdout
