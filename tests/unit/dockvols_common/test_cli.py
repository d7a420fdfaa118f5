from __future__ import annotations

import argparse

import pytest

from dockvols_common.cli import run_main


class Refused(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tool")
    parser.add_argument("what", choices=["ok", "refused", "bug"])
    parser.add_argument("--json", action="store_true")
    return parser


def _run(args: argparse.Namespace) -> tuple[object, str]:
    if args.what == "refused":
        raise Refused("volume db is in use; stop its containers")
    if args.what == "bug":
        raise KeyError("x")
    return {"b": 1, "a": [2]}, "all done"


def _explain(exc: Exception) -> tuple[int, str] | None:
    return (3, f"Refused: {exc}") if isinstance(exc, Refused) else None


def main(*argv: str) -> int:
    return run_main("tool", _parser(), list(argv), _run, _explain)


def test_a_result_prints_as_text_or_as_sorted_json(capsys: pytest.CaptureFixture) -> None:
    assert main("ok") == 0
    assert capsys.readouterr().out == "all done\n"
    assert main("ok", "--json") == 0
    assert capsys.readouterr().out == '{\n  "a": [\n    2\n  ],\n  "b": 1\n}\n'


def test_an_expected_error_is_one_line_on_stderr_with_its_status(
        capsys: pytest.CaptureFixture) -> None:
    assert main("refused") == 3
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err == "tool: Refused: volume db is in use; stop its containers\n"


def test_an_unexpected_error_is_not_hidden() -> None:
    with pytest.raises(KeyError):
        main("bug")


def test_usage_errors_exit_2_and_help_0(capsys: pytest.CaptureFixture) -> None:
    assert main("nonsense") == 2
    assert "invalid choice" in capsys.readouterr().err
    assert main("--help") == 0
