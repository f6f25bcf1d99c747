"""Immutable value classes without ``dataclasses``. Stdlib only, and light: the workload path imports it.

``import dataclasses`` imports ``inspect`` (with ``ast``, ``dis``, ``tokenize``): ~10 ms of the run path's
start-up on a 2-core machine, spent before ``vaultmesh run`` can send its login. The few classes on that path
(``RetryPolicy``, ``Response``, ``Ahead``, ``Source``, ``Target``, ``Delivery``) derive from ``Value``
instead: fields are ``__slots__``, set once in ``__init__`` with ``_set``; equality, hash and repr are over the
fields, as a frozen dataclass's are.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class Value:
    """Base of immutable values: ``__slots__`` are the fields; assigning after ``__init__`` is refused."""

    __slots__: tuple[str, ...] = ()

    def _set(self, **values: Any) -> None:
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable (cannot set {name})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable (cannot delete {name})")

    def _fields(self) -> tuple[Any, ...]:
        return tuple(getattr(self, n) for n in self.__slots__)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._fields() == other._fields()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, *self._fields()))

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__)
        return f"{type(self).__name__}({inner})"


__all__ = ["Value"]
