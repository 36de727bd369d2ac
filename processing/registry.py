"""A registry of factories by name: detectors and trackers are chosen from settings this way."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


class Registry(Generic[T]):
    """Factories of one kind of thing (`kind` names it in error messages), looked up by name."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[F], F]:
        """Class decorator: make `create(name, ...)` build this class."""

        def decorator(factory: F) -> F:
            existing = self._factories.get(name)
            if existing is not None and existing is not factory:
                raise ValueError(f"{self.kind} {name!r} is already registered to {existing!r}")
            self._factories[name] = factory
            return factory

        return decorator

    def create(self, name: str, **settings: Any) -> T:
        """Build the one registered as `name`; `settings` go to its constructor."""
        try:
            factory = self._factories[name]
        except KeyError:
            raise ValueError(f"unknown {self.kind} {name!r}; known: {self.names()}") from None
        return factory(**settings)

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._factories)
