"""The suite's own scheduling hint: files with the longest ``heavy`` tests are collected first."""

import types

import pytest
from helpers import order_by_heavy_seconds


def _item(path, seconds=None):
    mark = None if seconds is None else pytest.mark.heavy(seconds=seconds).mark
    return types.SimpleNamespace(path=path, name=f"{path}:{seconds}", nodeid=path, get_closest_marker=lambda name: mark)


def test_heaviest_files_first_each_files_tests_in_their_order():
    items = [_item("a.py"), _item("b.py", 20), _item("a.py"), _item("c.py", 10), _item("c.py", 15), _item("d.py")]
    order_by_heavy_seconds(items)
    assert [i.name for i in items] == ["c.py:10", "c.py:15", "b.py:20", "a.py:None", "a.py:None", "d.py:None"]


def test_a_heavy_mark_without_its_seconds_is_refused():
    bare = types.SimpleNamespace(path="e.py", nodeid="e.py::t", get_closest_marker=lambda name: pytest.mark.heavy.mark)
    with pytest.raises(pytest.UsageError, match=r"e.py::t: write @pytest.mark.heavy\(seconds=N\)"):
        order_by_heavy_seconds([_item("a.py"), bare])
