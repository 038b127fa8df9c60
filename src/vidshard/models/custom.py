"""A user's own model class, named ``package.module:Class`` or ``path/to/file.py:Class``.

The convention (also the one plugins follow) is written in :func:`construct_model`.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from vidshard.errors import ModelError, VidshardError
from vidshard.models.base import Model, ModelSpec
from vidshard.models.options import ModelOptions
from vidshard.pathnames import expand_user

_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_OPTIONAL = ("scale", "options")


def parse_class_target(name: str) -> tuple[str, str] | None:
    """``("pkg.mod", "Class")`` or ``("path/file.py", "Class")``; None if ``name`` is neither."""
    left, sep, attr = name.rpartition(":")
    if not sep or not left or not attr.isidentifier():
        return None
    if left.endswith(".py") or _DOTTED.fullmatch(left):
        return left, attr
    return None


def canonical_target(name: str) -> str:
    """The target with a file path made absolute, so a worker elsewhere finds it."""
    parsed = parse_class_target(name)
    if parsed is None or not parsed[0].endswith(".py"):
        return name
    return f"{expand_user(parsed[0]).resolve()}:{parsed[1]}"


def import_object(target: str) -> object:
    """Import the class or factory a target names."""
    parsed = parse_class_target(target)
    if parsed is None:
        raise ModelError(f"expected package.module:Class or file.py:Class, got {target!r}")
    where, attr = parsed
    module = _import_file(Path(where)) if where.endswith(".py") else _import_module(where)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ModelError(f"model class {attr!r} not found in {where}") from None


def _import_module(dotted: str) -> ModuleType:
    try:
        return importlib.import_module(dotted)
    except ImportError as exc:
        raise ModelError(f"cannot import model module {dotted!r}: {exc}") from exc


def _import_file(path: Path) -> ModuleType:
    path = expand_user(path).resolve()
    if not path.is_file():
        raise ModelError(f"model class file not found: {path}")
    digest = hashlib.sha1(str(path).encode(), usedforsecurity=False).hexdigest()[:12]
    name = f"vidshard_user_model_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ModelError(f"cannot import model class file {path}: not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look a class's module up here
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the user's module may raise anything while it runs
        del sys.modules[name]
        raise ModelError(
            f"cannot import model class file {path.name}: {type(exc).__name__}: {exc}"
        ) from exc
    return module


def construct_model(
    factory: object, *, label: str, scale: int | None, options: ModelOptions
) -> Model:
    """Build an unloaded model from a user's class (or any callable returning a model).

    The convention: ``factory()`` takes no required arguments. If it has a parameter
    ``scale`` and a scale was asked for, it gets ``scale=``; if it has a parameter
    ``options``, it gets the :class:`ModelOptions`. The constructor must be cheap and must
    not touch a device (it also runs in the coordinator to read ``spec``); weights belong
    in ``load(device)``.
    """
    if not callable(factory):
        raise ModelError(
            f"expected {label} to be a class or callable, got {type(factory).__name__}"
        )
    kwargs = _factory_kwargs(factory, label, scale, options)
    try:
        model = factory(**kwargs)
    except VidshardError:
        raise
    except Exception as exc:  # user code
        raise ModelError(f"{label}() failed: {type(exc).__name__}: {exc}") from exc
    return check_model(model, label)


def _factory_kwargs(
    factory: Any, label: str, scale: int | None, options: ModelOptions
) -> dict[str, object]:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # some builtins and C types have no signature
        return {}
    plain = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    required = [
        p.name
        for p in params.values()
        if p.default is p.empty
        and p.kind in (*plain, inspect.Parameter.POSITIONAL_ONLY)
        and (p.name not in _OPTIONAL or (p.name == "scale" and scale is None))
    ]
    if required == ["scale"]:
        raise ModelError(f"model {label} needs a scale: expected --scale, got none")
    if required:
        raise ModelError(
            f"expected {label} to take no required arguments besides scale and options, "
            f"got {', '.join(required)}"
        )
    kwargs: dict[str, object] = {}
    if scale is not None and "scale" in params and params["scale"].kind in plain:
        kwargs["scale"] = scale
    if "options" in params and params["options"].kind in plain:
        kwargs["options"] = options
    return kwargs


def check_model(model: object, label: str) -> Model:
    """``model`` as a :class:`Model`, or a ModelError saying what is missing."""
    missing = [a for a in ("spec", "load", "run") if not hasattr(model, a)]
    if missing or not isinstance(model, Model):
        raise ModelError(
            f"expected {label} to build a model with spec, load() and run(), "
            f"got {type(model).__name__} without {', '.join(missing) or 'them'}"
        )
    if not isinstance(model.spec, ModelSpec):
        raise ModelError(
            f"expected {label}.spec to be a ModelSpec, got {type(model.spec).__name__}"
        )
    return model


def check_spec(spec: ModelSpec, label: str, scale: int | None, options: ModelOptions) -> ModelSpec:
    """Refuse a scale or precision the model does not have."""
    if scale is not None and spec.scale != scale:
        raise ModelError(f"model {label} upscales x{spec.scale}, --scale {scale} given")
    if options.precision not in spec.precisions:
        raise ModelError(
            f"model {label} runs in {', '.join(spec.precisions)}, "
            f"precision {options.precision} given"
        )
    return spec
