"""Starting loader workers without the user's main module, under any start method.

``multiprocessing`` tells every spawn / forkserver child to run the parent's
main module, so that pickled references to it resolve: a script's whole top
level (``import torch`` included), or the training run itself in a script
with no ``if __name__ == "__main__":`` guard. The loader's workers need
none of it unless the pickled dataset refers to the script.
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import pickle
import sys
import threading
import types
from collections.abc import Callable, Iterator
from typing import Any

from pipestate._validate import brief

__all__ = ["check_context", "default_context", "dumps_for_workers", "started_without_main"]


def default_context() -> str:
    """The start method a Loader uses when none is given.

    ``'fork'`` on Linux while this process runs a single Python thread (it
    starts workers in milliseconds and takes any function); otherwise
    ``'forkserver'`` where available, else ``'spawn'``. None of them imports
    the user's main module in the workers (see :class:`Loader`).
    """
    methods = multiprocessing.get_all_start_methods()
    if sys.platform.startswith("linux") and "fork" in methods and threading.active_count() == 1:
        return "fork"
    return "forkserver" if "forkserver" in methods else "spawn"


def check_context(value: Any) -> str:
    """A start method name from a name, a ``multiprocessing`` context, or ``None``."""
    methods = multiprocessing.get_all_start_methods()
    if value is None:
        return default_context()
    if isinstance(value, multiprocessing.context.BaseContext):
        value = value.get_start_method()
    if not isinstance(value, str):
        raise TypeError(
            f"Loader: multiprocessing_context must be a start method name, a multiprocessing "
            f"context or None, got {type(value).__name__} {brief(value)}"
        )
    if value not in methods:
        raise ValueError(f"Loader: multiprocessing_context must be one of {methods}, got {value!r}")
    return value


_launch = threading.local()


def _without_main(name: str, original: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    data = original(name)
    if getattr(_launch, "without_main", False):
        # The child then imports only what unpickling its target needs.
        data.pop("init_main_from_path", None)
        data.pop("init_main_from_name", None)
    return data


def _install_launch_hook() -> None:
    """Lets this module start spawn / forkserver children that don't import ``__main__``.

    ``multiprocessing`` tells every such child to run the parent's main
    module (so that pickled references to it resolve): a script's top level,
    ``import torch`` included, or the whole training run of a script with no
    ``if __name__ == "__main__":`` guard. The hook drops that instruction for
    the children this module starts while ``_launch.without_main`` is set;
    every other process is started as before.
    """
    from multiprocessing import spawn

    current = spawn.get_preparation_data
    if getattr(current, "_pipestate_hook", False):
        return
    hooked = _HookedPreparation(current)
    spawn.get_preparation_data = hooked


class _HookedPreparation:
    """``multiprocessing.spawn.get_preparation_data``, minus the main module when asked."""

    _pipestate_hook = True

    def __init__(self, original: Callable[[str], dict[str, Any]]) -> None:
        self._original = original

    def __call__(self, name: str) -> dict[str, Any]:
        return _without_main(name, self._original)


@contextlib.contextmanager
def started_without_main(active: bool) -> Iterator[None]:
    if not active:
        yield
        return
    _install_launch_hook()
    _launch.without_main = True
    try:
        yield
    finally:
        _launch.without_main = False


class _MainFinder(pickle.Pickler):
    """A pickler that notes references to functions and classes of ``__main__``."""

    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.found_main = False

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, (type, types.FunctionType)) and obj.__module__ == "__main__":
            self.found_main = True
        return NotImplemented


def dumps_for_workers(content: Any) -> tuple[bytes, bool]:
    """``content`` pickled, and whether unpickling it needs the main module."""
    buffer = io.BytesIO()
    pickler = _MainFinder(buffer)
    pickler.dump(content)
    return buffer.getvalue(), pickler.found_main
