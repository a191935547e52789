"""A small least-recently-used memo, for values the harness recomputes from the same inputs
(a finished run's joined predictions, its bootstrap pair matrix, a tier's given ids)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class Recent(Generic[V]):
    """`get(key, build)`: the value remembered for `key`, or `build()` remembered. Keeps the
    `keep` most recently used; a `build` that raises remembers nothing."""

    def __init__(self, keep: int):
        self.keep = keep
        self._items: OrderedDict[Hashable, V] = OrderedDict()

    def get(self, key: Hashable, build: Callable[[], V]) -> V:
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        value = self._items[key] = build()
        while len(self._items) > self.keep:
            self._items.popitem(last=False)
        return value
