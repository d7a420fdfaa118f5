"""What a backend can do is a seam (``Backend.storage_policies``, ``close()`` in the protocol),
never a question about which backend it is: outside esx_service/backends/, no module asks a
backend's name against a literal, probes it with hasattr/getattr, or checks its class."""

from __future__ import annotations

import ast
from pathlib import Path

ESX_SERVICE = Path(__file__).resolve().parents[3] / "esx_service"


def _mentions_backend(node: ast.AST) -> bool:
    return "backend" in ast.unparse(node).lower()


def capability_checks(source: str) -> list[str]:
    """The lines of ``source`` that decide by a backend's identity instead of a seam."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in ("hasattr", "getattr") and node.args
                and _mentions_backend(node.args[0])):
            found.append(ast.unparse(node))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id == "isinstance" and len(node.args) == 2
              and _mentions_backend(node.args[1])):
            found.append(ast.unparse(node))
        elif isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            names = [s for s in sides if isinstance(s, ast.Attribute) and s.attr == "name"
                     and _mentions_backend(s.value)]
            literals = [s for s in sides if isinstance(s, ast.Constant)
                        and isinstance(s.value, str)]
            if names and literals:
                found.append(ast.unparse(node))
    return found


def test_the_checker_finds_each_kind_of_identity_check() -> None:
    source = ("if backend.name == 'vsphere': pass\n"
              "if self.volumes.backend.name != 'local': pass\n"
              "if hasattr(self.backend, 'storage_policies'): pass\n"
              "close = getattr(backend, 'close', None)\n"
              "if isinstance(b, VsphereBackend): pass\n")
    assert len(capability_checks(source)) == 5


def test_the_checker_leaves_reporting_a_backend_name_alone() -> None:
    source = ("log.info('backend=%s', backend.name)\n"
              "answer = {'backend': svc.backend.name}\n"
              "if backend.storage_policies is None: pass\n"
              "size = getattr(disk.backing, 'uuid', None)\n")
    assert capability_checks(source) == []


def test_no_module_outside_the_backends_asks_which_backend_it_has() -> None:
    offenders = {}
    for path in sorted(ESX_SERVICE.rglob("*.py")):
        if "backends" in path.relative_to(ESX_SERVICE).parts:
            continue
        found = capability_checks(path.read_text())
        if found:
            offenders[str(path.relative_to(ESX_SERVICE.parent))] = found
    assert not offenders, f"use a seam on the Backend protocol instead: {offenders}"
