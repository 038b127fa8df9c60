"""Model names, files and classes -> a picklable recipe -> a model inside the worker.

The coordinator calls :func:`resolve_model`: it checks the request (name, scale,
precision) without touching an accelerator and returns a :class:`ModelRef`. Each worker
calls :func:`build_model` with that ref, after its device visibility is set, and then
``model.load(device)``.

A name is, in this order: a registered name (built-ins ``lanczos``, ``bicubic``,
``identity``, plus plugins from the ``vidshard.models`` entry point group), a
``package.module:Class`` or ``file.py:Class`` target, or a weights file spandrel reads.
Registry entries are frozen records and duplicates are refused, as in spandrel's
architecture registry. Plugins are read from entry points each time a registry is built;
nothing is registered at import.

A plugin's entry point names either a :class:`ModelEntry` (full control) or a model
class / factory following :func:`~vidshard.models.custom.construct_model`'s convention::

    [project.entry-points."vidshard.models"]
    my-sr = "my_package.models:MyUpscaler"
"""

from __future__ import annotations

import difflib
import importlib.metadata
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Literal

from vidshard.errors import ConfigError, ModelError
from vidshard.models.base import PRECISIONS, Model, ModelSpec
from vidshard.models.custom import (
    canonical_target,
    check_model,
    check_spec,
    construct_model,
    import_object,
    parse_class_target,
)
from vidshard.models.options import DEFAULT_OPTIONS, ModelOptions, TileOption
from vidshard.models.weights import WEIGHT_SUFFIXES, inspect_weights, is_weights_path
from vidshard.pathnames import expand_user, path_name_problem, shown

__all__ = [
    "DEFAULT_SCALE",
    "PLUGIN_GROUP",
    "ModelEntry",
    "ModelOptions",
    "ModelRef",
    "ModelRegistry",
    "TileOption",
    "build_model",
    "builtin_entries",
    "default_registry",
    "plugin_entries",
    "resolve_model",
]

logger = logging.getLogger(__name__)

PLUGIN_GROUP = "vidshard.models"
DEFAULT_SCALE = 2  # the resamplers' scale when none is given

Describe = Callable[[int | None, ModelOptions], ModelSpec]
Create = Callable[[ModelSpec, ModelOptions], Model]
RefKind = Literal["registered", "file", "class"]


@dataclass(frozen=True)
class ModelEntry:
    """A named model. ``describe`` runs in the coordinator: it checks the requested scale
    and options and returns the spec, never touching a device. ``create`` runs in the
    worker and returns an unloaded model for that spec."""

    name: str
    describe: Describe = field(repr=False)
    create: Create = field(repr=False)
    summary: str = ""
    origin: str = "builtin"  # "builtin" or "plugin <distribution>"


class ModelRegistry:
    """Named :class:`ModelEntry` records, in insertion order; duplicates are refused."""

    def __init__(self, entries: Iterable[ModelEntry] = ()) -> None:
        self._entries: dict[str, ModelEntry] = {}
        self.add(*entries)

    def add(self, *entries: ModelEntry) -> None:
        """Add all ``entries`` or, if any name is taken, none of them."""
        new = dict(self._entries)
        for entry in entries:
            if entry.name in new:
                raise ModelError(
                    f"model name {entry.name!r} registered twice "
                    f"({new[entry.name].origin} and {entry.origin})"
                )
            new[entry.name] = entry
        self._entries = new

    def get(self, name: str) -> ModelEntry | None:
        return self._entries.get(name)

    def names(self, origin: str | None = None) -> tuple[str, ...]:
        """Names, optionally only those whose origin starts with ``origin``."""
        return tuple(
            n for n, e in self._entries.items() if origin is None or e.origin.startswith(origin)
        )

    def copy(self) -> ModelRegistry:
        return ModelRegistry(self._entries.values())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[ModelEntry]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)


@dataclass(frozen=True)
class ModelRef:
    """A small, picklable recipe for a model, made by :func:`resolve_model`.

    ``kind``: ``"registered"`` (``target`` is a registry name), ``"file"`` (an absolute
    weights path) or ``"class"`` (``package.module:Class`` or ``/abs/file.py:Class``).
    """

    kind: RefKind
    target: str
    spec: ModelSpec
    options: ModelOptions = DEFAULT_OPTIONS

    @property
    def name(self) -> str:
        return self.spec.name


# --- built-ins -----------------------------------------------------------------------


def _resample_spec(method: str, scale: int | None, options: ModelOptions) -> ModelSpec:
    # No network: any precision is accepted and changes nothing.
    return ModelSpec(
        name=method, scale=DEFAULT_SCALE if scale is None else scale, precisions=PRECISIONS
    )


def _create_resample(method: str, spec: ModelSpec, options: ModelOptions) -> Model:
    from vidshard.models.classical import ResampleUpscaler

    return ResampleUpscaler(method, spec.scale)


def _identity_spec(scale: int | None, options: ModelOptions) -> ModelSpec:
    if scale not in (None, 1):
        raise ModelError(f"model identity upscales x1, --scale {scale} given")
    return ModelSpec(name="identity", scale=1, precisions=PRECISIONS)


def _create_identity(spec: ModelSpec, options: ModelOptions) -> Model:
    from vidshard.models.classical import IdentityModel

    return IdentityModel()


def builtin_entries() -> tuple[ModelEntry, ...]:
    """``lanczos`` and ``bicubic`` (any integer scale, default 2) and ``identity`` (x1)."""
    return (
        ModelEntry(
            "lanczos",
            partial(_resample_spec, "lanczos"),
            partial(_create_resample, "lanczos"),
            "Lanczos resampling (Pillow), no weights",
        ),
        ModelEntry(
            "bicubic",
            partial(_resample_spec, "bicubic"),
            partial(_create_resample, "bicubic"),
            "bicubic resampling (Pillow), no weights",
        ),
        ModelEntry(
            "identity",
            _identity_spec,
            _create_identity,
            "returns frames unchanged (x1), to measure overhead",
        ),
    )


# --- plugins -------------------------------------------------------------------------


def _plugin_entry(ep: importlib.metadata.EntryPoint) -> object:
    try:
        loaded: object = ep.load()
    except Exception as exc:  # a broken plugin must not hide the others
        raise ModelError(
            f"plugin model {ep.name!r} ({ep.value}) failed to load: {type(exc).__name__}: {exc}"
        ) from exc
    return loaded


def _describe_plugin(
    ep: importlib.metadata.EntryPoint, scale: int | None, options: ModelOptions
) -> ModelSpec:
    loaded = _plugin_entry(ep)
    if isinstance(loaded, ModelEntry):
        return loaded.describe(scale, options)
    model = construct_model(loaded, label=ep.name, scale=scale, options=options)
    return check_spec(model.spec, ep.name, scale, options)


def _create_plugin(
    ep: importlib.metadata.EntryPoint, spec: ModelSpec, options: ModelOptions
) -> Model:
    loaded = _plugin_entry(ep)
    if isinstance(loaded, ModelEntry):
        return loaded.create(spec, options)
    return construct_model(loaded, label=ep.name, scale=spec.scale, options=options)


def plugin_entries() -> tuple[ModelEntry, ...]:
    """One entry per ``vidshard.models`` entry point; plugins are imported only when used."""
    entries = []
    for ep in importlib.metadata.entry_points(group=PLUGIN_GROUP):
        dist = getattr(ep, "dist", None)
        origin = f"plugin {dist.name}" if dist is not None else "plugin"
        entries.append(
            ModelEntry(
                ep.name,
                partial(_describe_plugin, ep),
                partial(_create_plugin, ep),
                ep.value,
                origin,
            )
        )
    return tuple(entries)


def default_registry() -> ModelRegistry:
    """Built-ins plus installed plugins. A plugin whose name is taken is skipped, logged."""
    registry = ModelRegistry(builtin_entries())
    for entry in plugin_entries():
        try:
            registry.add(entry)
        except ModelError as exc:
            logger.warning("%s; ignoring the %s", exc, entry.origin)
    return registry


# --- resolve (coordinator) and build (worker) ----------------------------------------


def resolve_model(
    name: str,
    *,
    scale: int | None = None,
    options: ModelOptions = DEFAULT_OPTIONS,
    registry: ModelRegistry | None = None,
) -> ModelRef:
    """Check a model request and return its recipe; touches no accelerator.

    Weights files are read once on CPU to detect architecture and scale, then freed.
    """
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, int) or scale < 1):
        raise ConfigError(f"--scale must be an integer >= 1, got {scale!r}")
    registry = default_registry() if registry is None else registry
    entry = registry.get(name)
    if entry is not None:
        return ModelRef("registered", name, entry.describe(scale, options), options)
    problem = path_name_problem(name)
    if problem is not None:
        raise ModelError(f"model {shown(name)} cannot name a file: {problem}")
    if parse_class_target(name) is not None:
        target = canonical_target(name)
        model = construct_model(import_object(target), label=name, scale=scale, options=options)
        return ModelRef("class", target, check_spec(model.spec, name, scale, options), options)
    path = expand_user(name)
    if is_weights_path(name):
        return _resolve_file(path.resolve(), scale, options)
    if path.exists():
        raise ModelError(
            f"model file {path.name}: expected a weights file ({', '.join(WEIGHT_SUFFIXES)}), "
            f"got {path.suffix or 'no suffix'}"
        )
    raise ModelError(unknown_model_message(name, registry))


def _resolve_file(path: Path, scale: int | None, options: ModelOptions) -> ModelRef:
    info = inspect_weights(path)
    spec = ModelSpec(
        name=path.stem,
        scale=info.scale,
        precisions=info.precisions,
        arch=info.arch,
        tileable=info.tileable,
    )
    return ModelRef(
        "file", str(path), check_spec(spec, f"{path.name} ({info.arch})", scale, options), options
    )


def names_a_file(name: str) -> bool:
    """Whether a model name is meant as a file (weights, a folder path, ``file.py:Class``)
    or a class (``pkg.module:Class``) rather than a registered name."""
    return (
        is_weights_path(name)
        or parse_class_target(name) is not None
        or "/" in name
        or "\\" in name
        or name.startswith(("~", "."))
    )


def unknown_model_message(name: str, registry: ModelRegistry | None = None) -> str:
    """What to say of a model name nobody registered: the names there are, and the
    closest one."""
    registry = default_registry() if registry is None else registry
    builtins, plugins = registry.names("builtin"), registry.names("plugin")
    known = f"a built-in ({', '.join(builtins)})"
    if plugins:
        known += f", a plugin ({', '.join(plugins)})"
    close = difflib.get_close_matches(name.lower(), [*builtins, *plugins], n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return (
        f"unknown model {name!r}: expected {known}, a weights file "
        f"({', '.join(WEIGHT_SUFFIXES)}) or package.module:Class / file.py:Class{hint}"
    )


def build_model(ref: ModelRef, *, registry: ModelRegistry | None = None) -> Model:
    """An unloaded model for ``ref``; the caller then runs ``model.load(device)``."""
    if ref.kind == "file":
        from vidshard.models.upscale import SpandrelUpscaler

        model: Model = SpandrelUpscaler(Path(ref.target), ref.spec, ref.options)
    elif ref.kind == "class":
        label = ref.target
        model = construct_model(
            import_object(ref.target), label=label, scale=ref.spec.scale, options=ref.options
        )
    elif ref.kind == "registered":
        entry = (default_registry() if registry is None else registry).get(ref.target)
        if entry is None:
            raise ModelError(
                f"model {ref.target!r} is not registered here: expected its plugin installed"
            )
        model = check_model(entry.create(ref.spec, ref.options), ref.target)
    else:
        raise ModelError(f"expected model ref kind registered, file or class, got {ref.kind!r}")
    if model.spec.scale != ref.spec.scale:
        raise ModelError(
            f"model {ref.name} upscales x{model.spec.scale} here, x{ref.spec.scale} resolved"
        )
    return model
