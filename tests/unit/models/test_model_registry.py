"""The model registry: built-ins, user classes, plugins, and the coordinator's checks."""

from __future__ import annotations

import dataclasses
import os
import pickle
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from models_fixtures import random_frames, write_user_model_file
from vidshard.errors import ConfigError, ModelError
from vidshard.models import (
    PRECISIONS,
    ModelEntry,
    ModelOptions,
    ModelRef,
    ModelRegistry,
    ModelSpec,
    build_model,
    builtin_entries,
    default_registry,
    resolve_model,
)
from vidshard.models.custom import import_object

SRC = Path(__file__).resolve().parents[3] / "src"


def nearest(frames: np.ndarray, scale: int) -> np.ndarray:
    return frames.repeat(scale, axis=1).repeat(scale, axis=2)


# --- the registry as data ------------------------------------------------------------


def test_builtins_are_registered_in_order() -> None:
    assert ModelRegistry(builtin_entries()).names() == ("lanczos", "bicubic", "identity")


def test_entries_are_frozen_records() -> None:
    entry = ModelRegistry(builtin_entries()).get("lanczos")
    assert entry is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        entry.name = "other"  # type: ignore[misc]


def test_duplicate_names_are_refused_and_nothing_is_added() -> None:
    registry = ModelRegistry(builtin_entries())
    extra = dataclasses.replace(builtin_entries()[0], name="extra")
    duplicate = dataclasses.replace(builtin_entries()[0], origin="plugin other")
    with pytest.raises(ModelError, match="model name 'lanczos' registered twice"):
        registry.add(extra, duplicate)
    assert "extra" not in registry
    assert len(registry) == 3


def test_copy_is_independent() -> None:
    registry = ModelRegistry(builtin_entries())
    copy = registry.copy()
    copy.add(dataclasses.replace(builtin_entries()[0], name="mine"))
    assert "mine" in copy
    assert "mine" not in registry


# --- built-ins -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "scale", "expected_scale"),
    [
        ("lanczos", None, 2),  # default scale
        ("lanczos", 3, 3),  # any integer scale
        ("bicubic", 1, 1),  # x1 is allowed
        ("bicubic", 8, 8),
        ("identity", None, 1),  # always x1
        ("identity", 1, 1),
    ],
)
def test_builtins_resolve(name: str, scale: int | None, expected_scale: int) -> None:
    ref = resolve_model(name, scale=scale)
    assert (ref.kind, ref.target, ref.name) == ("registered", name, name)
    assert ref.spec.scale == expected_scale
    assert ref.spec.precisions == PRECISIONS  # no network: any precision is fine


@pytest.mark.parametrize("name", ["lanczos", "bicubic", "identity"])
def test_builtins_build_in_the_worker_with_the_resolved_spec(name: str) -> None:
    ref = resolve_model(name)
    model = build_model(pickle.loads(pickle.dumps(ref)))  # as a worker receives it
    assert model.spec == ref.spec
    model.load("cpu")
    frames = random_frames(2, 8, 12)
    assert model.run(frames).shape == (2, 8 * ref.spec.scale, 12 * ref.spec.scale, 3)


@pytest.mark.parametrize(
    ("name", "scale", "error", "message"),
    [
        ("identity", 2, ModelError, "model identity upscales x1, --scale 2 given"),
        ("lanczos", 0, ConfigError, "--scale must be an integer >= 1, got 0"),
        ("lanczos", -2, ConfigError, "got -2"),
        ("lanczos", True, ConfigError, "got True"),  # a bool is not a scale
        ("lanczos", 2.0, ConfigError, "got 2.0"),  # nor a float
        (
            "realesrgan",
            None,
            ModelError,
            "unknown model 'realesrgan': expected a built-in (lanczos, bicubic, identity)",
        ),
        # a typo of a built-in name: the closest one is named
        ("lanczoz", None, ModelError, r"unknown model 'lanczoz'.*did you mean 'lanczos'\?"),
        ("Bicubic", None, ModelError, r"did you mean 'bicubic'\?"),
        ("missing_model.pth", None, ModelError, "model file not found: .*missing_model.pth"),
        ("missing_model.safetensors", 2, ModelError, "model file not found"),
        ("no_such_pkg_xyz.mod:Model", None, ModelError, "cannot import model module"),
        ("missing_file.py:Model", None, ModelError, "model class file not found"),
    ],
)
def test_bad_requests_are_refused_in_the_coordinator(
    name: str, scale: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        resolve_model(name, scale=scale)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)  # one line, for the CLI


def test_an_existing_file_with_another_suffix_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"onnx")
    with pytest.raises(ModelError, match=r"model file model.onnx: expected a weights file \(.pth"):
        resolve_model(str(path))


def test_model_ref_is_a_frozen_picklable_recipe() -> None:
    ref = resolve_model("bicubic", scale=3, options=ModelOptions(precision="bf16", tile=None))
    assert pickle.loads(pickle.dumps(ref)) == ref
    with pytest.raises(dataclasses.FrozenInstanceError):
        ref.target = "lanczos"  # type: ignore[misc]


def test_building_a_name_this_worker_does_not_know_is_refused() -> None:
    ref = ModelRef("registered", "not-installed", ModelSpec(name="not-installed", scale=2))
    with pytest.raises(ModelError, match="'not-installed' is not registered here"):
        build_model(ref)


# --- a user's own class --------------------------------------------------------------


@pytest.mark.parametrize(
    ("scale", "expected"),
    [
        (None, 2),  # the class's own default
        (3, 3),  # passed as scale= because the constructor has that parameter
    ],
)
def test_user_class_in_a_file(scale: int | None, expected: int, tmp_path: Path) -> None:
    path = write_user_model_file(tmp_path)
    ref = resolve_model(f"{path}:NearestUpscaler", scale=scale)
    assert (ref.kind, ref.target, ref.spec.scale) == ("class", f"{path}:NearestUpscaler", expected)
    model = build_model(pickle.loads(pickle.dumps(ref)))
    model.load("cpu")
    frames = random_frames(2, 8, 8)
    assert np.array_equal(model.run(frames), nearest(frames, expected))


def test_relative_class_file_becomes_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_user_model_file(tmp_path / "models", filename="rel_model.py")
    monkeypatch.chdir(tmp_path)
    ref = resolve_model("models/rel_model.py:NearestUpscaler")
    assert ref.target == f"{tmp_path.resolve() / 'models' / 'rel_model.py'}:NearestUpscaler"


def test_user_class_in_a_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "vs_user_pkg"
    write_user_model_file(package, filename="upscalers.py", class_name="Nearest")
    (package / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    ref = resolve_model("vs_user_pkg.upscalers:Nearest", scale=4)
    assert (ref.kind, ref.spec.scale) == ("class", 4)
    assert build_model(ref).spec.scale == 4


USER_CLASSES = '''
import numpy as np
from vidshard.models import ModelOptions, ModelSpec

class FixedX4:
    """No scale parameter: always x4."""
    def __init__(self):
        self.spec = ModelSpec(name="fixed", scale=4)
    def load(self, device): pass
    def run(self, batch): return batch.repeat(4, 1).repeat(4, 2)

class NeedsWeights:
    def __init__(self, weights_path):
        self.spec = ModelSpec(name="needs")

class NeedsScale:
    def __init__(self, scale):
        self.spec = ModelSpec(name="needs-scale", scale=scale)
    def load(self, device): pass
    def run(self, batch): return batch

class NoRun:
    def __init__(self):
        self.spec = ModelSpec(name="norun")
    def load(self, device): pass

class DictSpec:
    spec = {"scale": 2}
    def load(self, device): pass
    def run(self, batch): return batch

class Fp32Only:
    def __init__(self, scale=1):
        self.spec = ModelSpec(name="fp32only", scale=scale, precisions=("fp32",))
    def load(self, device): pass
    def run(self, batch): return batch

class WantsOptions:
    seen = None
    def __init__(self, options: ModelOptions):
        WantsOptions.seen = options
        self.spec = ModelSpec(name="opts", scale=1, precisions=("fp32", "bf16"))
    def load(self, device): pass
    def run(self, batch): return batch

class Explodes:
    def __init__(self):
        raise OSError("disk on fire")

def make_identity(scale=1):
    """A factory function works as well as a class."""
    return Fp32Only(scale)

NOT_CALLABLE = 42
'''


@pytest.fixture
def classes_file(tmp_path: Path) -> Path:
    path = tmp_path / "user_classes.py"
    path.write_text(textwrap.dedent(USER_CLASSES))
    return path


@pytest.mark.parametrize(
    ("target", "scale", "options", "message"),
    [
        # a fixed-scale class asked for another scale
        ("FixedX4", 2, ModelOptions(), r"model .*:FixedX4 upscales x4, --scale 2 given"),
        # a required constructor argument vidshard cannot fill
        ("NeedsWeights", None, ModelOptions(), "no required arguments .* got weights_path"),
        # scale is a required parameter and none was given
        (
            "NeedsScale",
            None,
            ModelOptions(),
            r"model .*:NeedsScale needs a scale: expected --scale",
        ),
        # missing run()
        ("NoRun", None, ModelOptions(), r"spec, load\(\) and run\(\), got NoRun without run"),
        # spec of the wrong type
        ("DictSpec", None, ModelOptions(), r"\.spec to be a ModelSpec, got dict"),
        # a precision the class does not list
        ("Fp32Only", None, ModelOptions(precision="bf16"), "runs in fp32, precision bf16 given"),
        # the constructor raises
        ("Explodes", None, ModelOptions(), r"Explodes\(\) failed: OSError: disk on fire"),
        # not a class or function
        ("NOT_CALLABLE", None, ModelOptions(), "to be a class or callable, got int"),
        # no such name in the file
        ("Missing", None, ModelOptions(), "model class 'Missing' not found"),
    ],
)
def test_user_classes_that_break_the_convention_are_refused(
    classes_file: Path, target: str, scale: int | None, options: ModelOptions, message: str
) -> None:
    with pytest.raises(ModelError, match=message):
        resolve_model(f"{classes_file}:{target}", scale=scale, options=options)


@pytest.mark.parametrize(
    ("target", "scale", "expected_scale"),
    [
        ("FixedX4", 4, 4),  # the matching scale is fine
        ("FixedX4", None, 4),  # no scale asked: the class's
        ("make_identity", 3, 3),  # a factory function with scale=
    ],
)
def test_user_classes_that_follow_the_convention(
    classes_file: Path, target: str, scale: int | None, expected_scale: int
) -> None:
    ref = resolve_model(f"{classes_file}:{target}", scale=scale)
    assert build_model(ref).spec.scale == expected_scale


def test_a_class_with_an_options_parameter_gets_the_options(classes_file: Path) -> None:
    options = ModelOptions(precision="bf16", tile=None)
    ref = resolve_model(f"{classes_file}:WantsOptions", options=options)
    assert ref.spec.name == "opts"
    cls = import_object(f"{classes_file}:WantsOptions")  # the same module, imported once
    assert cls.seen == options  # type: ignore[attr-defined]


def test_a_class_file_that_fails_to_import_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "broken_model.py"
    path.write_text("import not_a_real_module_xyz\n")
    with pytest.raises(ModelError, match=r"cannot import model class file broken_model\.py"):
        resolve_model(f"{path}:Model")


# --- plugins (entry points) ----------------------------------------------------------

PLUGIN_MODULE = """
import numpy as np
from vidshard.models import ModelEntry, ModelSpec

class Triple:
    def __init__(self, scale=3):
        self.spec = ModelSpec(name="triple", scale=scale)
    def load(self, device): pass
    def run(self, batch): return batch.repeat(self.spec.scale, 1).repeat(self.spec.scale, 2)

def _describe(scale, options):
    return ModelSpec(name="entry-model", scale=scale or 2)

def _create(spec, options):
    return Triple(spec.scale)

ENTRY = ModelEntry("ignored-name", _describe, _create, "a full entry")
"""

ENTRY_POINTS = """
[vidshard.models]
triple = vs_plugin_models:Triple
full-entry = vs_plugin_models:ENTRY
broken = vs_plugin_missing_xyz:Model
lanczos = vs_plugin_models:Triple
"""


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An installed distribution "vs-plugin" declaring four models, one clashing."""
    (tmp_path / "vs_plugin_models.py").write_text(textwrap.dedent(PLUGIN_MODULE))
    dist = tmp_path / "vs_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: vs-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(ENTRY_POINTS)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("vs_plugin_models", None)


def test_plugins_are_listed_and_a_clashing_name_is_skipped(
    plugin_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = default_registry()
    assert registry.names("plugin") == ("triple", "full-entry", "broken")
    entry = registry.get("lanczos")
    assert entry is not None and entry.origin == "builtin"  # the built-in wins
    assert "registered twice" in caplog.text
    assert "vs_plugin_models" not in sys.modules  # listing imports nothing


@pytest.mark.parametrize(
    ("name", "scale", "expected_scale"),
    [
        ("triple", None, 3),  # a class entry point, its default scale
        ("triple", 2, 2),  # scale passed through
        ("full-entry", None, 2),  # a ModelEntry entry point: its describe/create run
        ("full-entry", 4, 4),
    ],
)
def test_plugin_models_resolve_and_build(
    plugin_dir: Path, name: str, scale: int | None, expected_scale: int
) -> None:
    ref = resolve_model(name, scale=scale)
    assert (ref.kind, ref.target, ref.spec.scale) == ("registered", name, expected_scale)
    model = build_model(pickle.loads(pickle.dumps(ref)))
    frames = random_frames(1, 4, 4)
    assert np.array_equal(model.run(frames), nearest(frames, expected_scale))


def test_unknown_names_list_plugins_too(plugin_dir: Path) -> None:
    with pytest.raises(ModelError, match=r"a plugin \(triple, full-entry, broken\)"):
        resolve_model("nope")


def test_a_broken_plugin_fails_alone_with_a_clear_message(plugin_dir: Path) -> None:
    with pytest.raises(ModelError, match=r"plugin model 'broken' .* failed to load"):
        resolve_model("broken")
    assert resolve_model("triple").spec.scale == 3  # the others still work


# --- cheap import --------------------------------------------------------------------


def test_importing_models_and_resolving_a_builtin_does_not_import_spandrel() -> None:
    code = (
        "import sys; import vidshard.models as m; m.resolve_model('lanczos'); "
        "print('spandrel' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize("entry", builtin_entries())
def test_builtin_entries_describe_without_a_device(entry: ModelEntry) -> None:
    spec = entry.describe(None, ModelOptions())
    assert spec.name == entry.name
