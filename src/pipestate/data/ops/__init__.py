"""The pipeline ops, one module each, and the registry of their dataset classes.

Every module of this package is imported here, and each dataset class that
names its op (its own ``_op_name``) is registered under that name: adding an
op is adding its module (see ``docs/architecture.md#adding-an-op``).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from types import MappingProxyType

from pipestate.data.dataset import Dataset


def _discover() -> dict[str, type[Dataset]]:
    found: dict[str, type[Dataset]] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, Dataset)
                and value.__module__ == module.__name__
                and "_op_name" in vars(value)
            ):
                name = value._op_name
                if name in found:
                    raise ImportError(
                        f"two ops are named {name!r}: {found[name].__qualname__} and "
                        f"{value.__qualname__}"
                    )
                found[name] = value
    return dict(sorted(found.items()))


REGISTRY: Mapping[str, type[Dataset]] = MappingProxyType(_discover())
"""Every op's dataset class by its tf.data name (read-only)."""

__all__ = ["REGISTRY"]
