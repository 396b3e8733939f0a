"""A non-editable install must ship every package and the demo guest (pip install . && gdbstub serve)."""

from __future__ import annotations

import tomllib

from tests.conftest import ROOT


def test_every_package_is_listed_in_pyproject() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("gdbstub", "backends")
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert found <= listed, f"packages missing from pyproject.toml: {sorted(found - listed)}"
    assert config["tool"]["setuptools"]["package-data"]["gdbstub"] == ["data/*.elf"]
    assert (ROOT / "gdbstub" / "data" / "demo.elf").exists()
