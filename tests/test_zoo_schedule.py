"""The zoo build's scheduler: a model starts once its parent is built, the longest chain of training first."""

from __future__ import annotations

import pytest

from modelprint.errors import ModelprintError
from modelprint.zoo.base import Recipe
from modelprint.zoo.build import _ReadyQueue


def recipe(name: str, steps: int, parent: str | None = None) -> Recipe:
    return Recipe(name, "ddpm", steps=steps, batch_size=1, parent=parent)


def test_the_longest_chain_starts_first_and_a_child_waits_for_its_parent() -> None:
    queue = _ReadyQueue([recipe("short", 10), recipe("long", 300), recipe("parent", 100),
                         recipe("child", 250, parent="parent"), recipe("built-parent-child", 5, parent="elsewhere")])
    order = iter(queue)
    assert next(order).name == "parent"  # 100 + 250 ahead of the single 300
    assert next(order).name == "long"
    assert next(order).name == "short"
    assert next(order).name == "built-parent-child"  # its parent is not to be built: ready from the start
    assert not queue.may_start()  # only the child is left and its parent still trains
    queue.finished("parent")
    assert queue.may_start() and next(order).name == "child"
    assert queue.may_start() and next(order, None) is None  # nothing left: the caller sees the end


def test_a_circular_parent_chain_is_refused() -> None:
    with pytest.raises(ModelprintError, match="circular parent chain"):
        _ReadyQueue([recipe("a", 1, parent="b"), recipe("b", 1, parent="a")])
