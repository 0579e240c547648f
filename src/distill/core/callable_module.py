"""``distill.export`` is both a function of the API (``distill.export(run_dir)``) and a package
(``distill.export.onnx``); so are ``compress``, ``bench`` and ``report``. Python's import of a submodule
sets the package as an attribute of ``distill``, replacing the function: after any ``import
distill.export.onnx`` (distill's own commands do that), ``distill.export(run_dir)`` would fail with
"'module' object is not callable". Each such package is made callable instead: calling it calls the API
function, and its submodules stay reachable as attributes."""

from __future__ import annotations

import sys
import types
from typing import Any


def callable_package(name: str, api_function: str) -> None:
    """Make the package ``name`` callable as ``distill.api.<api_function>``."""

    class _Package(types.ModuleType):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            from distill import api

            return getattr(api, api_function)(*args, **kwargs)

    _Package.__name__ = f"{api_function} (package and function)"
    sys.modules[name].__class__ = _Package
