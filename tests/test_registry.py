"""core.registry: names in order, lazy "module:attr" entries, one-line errors, entry points."""

from __future__ import annotations

import sys
from importlib.metadata import EntryPoint

import pytest

from laserkit.core import registry as R
from laserkit.core.errors import LaserkitError


def test_decorator_and_lazy_entries_keep_order_and_resolve():
    reg: R.Registry[object] = R.Registry("widget")

    @reg.register("first")
    class First:
        pass

    reg.register("path", "os.path:join")
    assert reg.names() == ["first", "path"]
    assert reg.get("first") is First
    import os.path

    assert reg.get("path") is os.path.join
    assert dict(reg.items()) == {"first": First, "path": os.path.join}


def test_unknown_and_duplicate_names_are_one_line_errors():
    reg: R.Registry[object] = R.Registry("widget")
    reg.register("a", 1)
    with pytest.raises(LaserkitError, match=r"^unknown widget 'b': use one of a$"):
        reg.get("b")
    with pytest.raises(LaserkitError, match="registered twice"):
        reg.register("a", 2)
    reg.register("broken", "laserkit_no_such_module:thing")
    with pytest.raises(LaserkitError, match="cannot import 'laserkit_no_such_module:thing'"):
        reg.get("broken")


def test_entry_points_of_installed_packages_are_found(monkeypatch):
    ep = EntryPoint("plugged", "json:dumps", "laserkit.widgets")
    monkeypatch.setattr(
        R, "entry_points", lambda group: [ep] if group == "laserkit.widgets" else []
    )
    reg: R.Registry[object] = R.Registry("widget", group="widgets")
    reg.register("own", 0)
    assert "plugged" in reg
    assert reg.names() == ["own", "plugged"]
    assert reg.get("plugged") is sys.modules["json"].dumps
