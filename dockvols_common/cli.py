"""What both command-line tools (``dockvols`` in the guest, ``dockvols-admin`` on the host)
do around their commands: parse, run, print the result (JSON with ``--json``, else text) or
one line ``<prog>: <message>`` on stderr, and return the exit status."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

Result = tuple[object, str]  # (what --json prints, what a person reads)
# an error the tool expects -> (exit status, message); None: not one of those, let it raise
Explain = Callable[[Exception], "tuple[int, str] | None"]


def run_main(prog: str, parser: argparse.ArgumentParser, argv: list[str] | None,
             run: Callable[[argparse.Namespace], Result], explain: Explain) -> int:
    """Usage errors exit 2 as argparse printed them and ``--help`` 0; an error ``explain``
    knows prints as one line and exits with its status; anything else is a bug and raises."""
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else 2
    try:
        data, text = run(args)
    except Exception as exc:
        verdict = explain(exc)
        if verdict is None:
            raise
        status, message = verdict
        print(f"{prog}: {message}", file=sys.stderr)
        return status
    print(json.dumps(data, indent=2, sort_keys=True) if args.json else text)
    return 0
