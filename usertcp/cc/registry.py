"""Finding a congestion controller by name or by file.

A spec is one of

- a name: a built-in (``newreno``, ``cubic``) or an entry point in the ``usertcp.cc`` group,
  which is how an installed package offers its algorithms::

      [project.entry-points."usertcp.cc"]
      mycc = "mypackage.mycc:MyCC"

- ``module.path:ClassName``: a class in an importable module (the entry-point syntax);
- ``path/to/file.py:ClassName``: a class in a Python file, which need not be installed;
- ``path/to/file.py``: the file's one `CongestionControl` subclass (defined there, not imported).

Built-in names are resolved from the table below first, so they work from a source checkout
without the package installed and cannot be shadowed by another distribution's entry point.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from importlib import metadata
from pathlib import Path

from .api import CongestionControl

__all__ = ["ENTRY_POINT_GROUP", "BUILTINS", "CCLoadError", "UnknownCC", "available", "resolve", "load"]

ENTRY_POINT_GROUP = "usertcp.cc"

BUILTINS: dict[str, str] = {
    "newreno": "usertcp.cc.newreno:NewReno",
    "cubic": "usertcp.cc.cubic:Cubic",
    "bbr": "usertcp.cc.bbr:Bbr",
    "bbr3": "usertcp.cc.bbr3:BBRv3",
    "vegas": "usertcp.cc.vegas:Vegas",
    "dctcp": "usertcp.cc.dctcp:Dctcp",
    "fixed-window": "usertcp.cc.fixed:FixedWindow",
    "fixed-rate": "usertcp.cc.fixed:FixedRate",
}


class CCLoadError(ValueError):
    """A spec named something that could not be loaded as a congestion controller."""


class UnknownCC(CCLoadError):
    """A spec is neither a known name nor a file or module reference."""


def available() -> list[str]:
    """Names `load` accepts: the built-ins and every installed ``usertcp.cc`` entry point."""
    return sorted(set(BUILTINS) | set(_entry_points()))


def load(spec: str | type[CongestionControl], mss: int, now: float = 0.0,
         params: dict | None = None) -> CongestionControl:
    """A new controller for a connection with SMSS ``mss``, created at time ``now``, with
    `params` (name -> value or string, see `usertcp.cc.api.param`) set for it alone."""
    cls = resolve(spec)
    if not params:
        return cls(mss, now)
    try:
        return cls.create(mss, now, params)
    except ValueError as exc:
        raise CCLoadError(f"congestion control {cls.name!r}: {exc}") from exc


def resolve(spec: str | type[CongestionControl]) -> type[CongestionControl]:
    """The `CongestionControl` subclass a spec names (see the module docstring)."""
    if isinstance(spec, type):
        return _check(spec, f"{spec.__module__}:{spec.__qualname__}")
    if not isinstance(spec, str) or not spec.strip():
        raise UnknownCC(f"congestion control spec must be a non-empty string, got {spec!r}; {_hint()}")
    spec = spec.strip()

    path, sep, attr = spec.rpartition(":") if ":" in spec else (spec, "", "")
    if _looks_like_file(path):
        return _from_file(Path(path), attr or None, spec)
    if sep:
        return _check(_import_attr(path, attr, spec), spec)

    if spec in BUILTINS:
        module, _, attr = BUILTINS[spec].partition(":")
        return _check(_import_attr(module, attr, spec), spec)
    entry_points = _entry_points()
    if spec in entry_points:
        ep = entry_points[spec]
        try:
            cls = ep.load()
        except Exception as exc:
            raise CCLoadError(
                f"congestion control {spec!r}: entry point {ep.value!r} of group {ENTRY_POINT_GROUP!r} "
                f"failed to load: {type(exc).__name__}: {exc}"
            ) from exc
        return _check(cls, f"{spec} ({ep.value})")
    raise UnknownCC(f"unknown congestion control {spec!r}; {_hint()}")


# ---------------------------------------------------------------------- details


def _hint() -> str:
    return f"available: {', '.join(available())} (or path/to/file.py[:ClassName], or module:ClassName)"


def _entry_points() -> dict[str, metadata.EntryPoint]:
    try:
        found = metadata.entry_points(group=ENTRY_POINT_GROUP)
    except Exception:  # a broken installed distribution must not break the built-ins
        return {}
    return {ep.name: ep for ep in found}


def _looks_like_file(path: str) -> bool:
    return path.endswith(".py") or "/" in path or path.startswith(".")


def _import_attr(module: str, attr: str, spec: str) -> object:
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise CCLoadError(
            f"congestion control {spec!r}: cannot import module {module!r}: {exc}"
        ) from exc
    try:
        return getattr(mod, attr)
    except AttributeError:
        raise CCLoadError(
            f"congestion control {spec!r}: module {module!r} has no {attr!r}; "
            f"it defines {_describe(_classes_in(mod))}"
        ) from None


def _from_file(path: Path, attr: str | None, spec: str) -> type[CongestionControl]:
    if not path.is_file():
        what = "is not a file" if path.exists() else "does not exist"
        raise CCLoadError(f"congestion control {spec!r}: {path} {what}")
    if path.suffix != ".py":
        raise CCLoadError(f"congestion control {spec!r}: {path} is not a Python (.py) file")
    module = _exec_file(path, spec)
    if attr is not None:
        if not hasattr(module, attr):
            raise CCLoadError(
                f"congestion control {spec!r}: {path} has no {attr!r}; "
                f"it defines {_describe(_classes_in(module))}"
            )
        return _check(getattr(module, attr), spec)
    found = _classes_in(module)
    if len(found) != 1:
        which = "none" if not found else ", ".join(c.__name__ for c in found)
        raise CCLoadError(
            f"congestion control {spec!r}: {path} must define exactly one CongestionControl "
            f"subclass to be loaded without ':ClassName'; it defines {which}"
        )
    return _check(found[0], spec)


def _exec_file(path: Path, spec: str):
    """Import a file as a module of its own. It goes into sys.modules under a name derived from
    its absolute path, because dataclasses, pickle and typing look classes up there."""
    resolved = path.resolve()
    digest = hashlib.sha1(str(resolved).encode()).hexdigest()[:12]
    name = f"usertcp_cc_plugin_{resolved.stem}_{digest}"
    module_spec = importlib.util.spec_from_file_location(name, resolved)
    if module_spec is None or module_spec.loader is None:
        raise CCLoadError(f"congestion control {spec!r}: cannot import {path}")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise CCLoadError(
            f"congestion control {spec!r}: importing {path} raised {type(exc).__name__}: {exc}"
        ) from exc
    return module


def _classes_in(module) -> list[type[CongestionControl]]:
    """CongestionControl subclasses defined in the module itself (not imported into it)."""
    return [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj)
        and issubclass(obj, CongestionControl)
        and obj is not CongestionControl
        and obj.__module__ == module.__name__
    ]


def _describe(classes: list[type]) -> str:
    if not classes:
        return "no CongestionControl subclass"
    return "CongestionControl subclasses " + ", ".join(c.__name__ for c in classes)


def _check(obj: object, spec: str) -> type[CongestionControl]:
    if not inspect.isclass(obj):
        raise CCLoadError(f"congestion control {spec!r}: {obj!r} is not a class")
    if not issubclass(obj, CongestionControl):
        raise CCLoadError(
            f"congestion control {spec!r}: {obj.__qualname__} is not a subclass of "
            f"usertcp.cc.CongestionControl"
        )
    if inspect.isabstract(obj):
        missing = ", ".join(sorted(obj.__abstractmethods__))
        raise CCLoadError(
            f"congestion control {spec!r}: {obj.__qualname__} does not implement {missing}"
        )
    return obj
