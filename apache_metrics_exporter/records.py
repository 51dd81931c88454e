"""Typed records at the price of ``collections.namedtuple``.

``class Stat(NamedTuple): pid: int ...`` is the one way records are declared
in this package. Type checkers read it as ``typing.NamedTuple``; at run time
it is built with ``collections.namedtuple`` from the class's annotations and
defaults, because importing ``typing`` costs about 3 ms of a one-shot
collection that Telegraf pays at every interval (see benchmarks/). Methods,
properties and the docstring declared in the class body are kept; instances
have no ``__dict__``.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NamedTuple as NamedTuple
else:
    from collections import namedtuple as _namedtuple

    class _Builder(type):
        def __new__(mcs, name: str, bases: tuple, namespace: dict) -> type:  # noqa: N804
            if not bases:  # NamedTuple itself
                return super().__new__(mcs, name, bases, namespace)
            fields = list(namespace.get("__annotations__", {}))
            defaults = [namespace[f] for f in fields if f in namespace]
            base = _namedtuple(name, fields, defaults=defaults,
                               module=namespace.get("__module__"))
            body = {k: v for k, v in namespace.items()
                    if k not in fields and k not in ("__annotations__", "__qualname__")}
            body["__slots__"] = ()
            body["__qualname__"] = namespace.get("__qualname__", name)
            return type(name, (base,), body)

    class NamedTuple(metaclass=_Builder):
        """Base class of the package's records (see the module docstring)."""
