"""Users' gin files keep working: every shipped config (gin/*.gin and the gin/base/*.gin they
include) resolves and parses with the package's configurables registered, every binding names
a parameter of the function it configures (read from the function's own signature, not from
gin), every macro it reads is defined, and the model it configures builds, at a tiny width,
with the frames, channels and classes its data settings give."""

import inspect
import pathlib
import re

import keras
import pytest

import gin
from lgd_tf.cli import configs

REPO = pathlib.Path(__file__).resolve().parents[2]
TOP = sorted(p.name for p in (REPO / "gin").glob("*.gin"))
BASE = sorted(f"base/{p.name}" for p in (REPO / "gin" / "base").glob("*.gin"))

# One binding: [scope/]configurable.parameter = value (gin's syntax, at the start of a line).
BINDING = re.compile(r"^(?:(?P<scope>[\w./]+)/)?(?P<name>[A-Za-z_][\w.]*)\.(?P<param>\w+)\s*=")
MACRO = re.compile(r"^(?P<macro>[A-Z_][A-Z0-9_]*)\s*=")
INCLUDE = re.compile(r"^include\s+'(?P<path>[^']+)'")


@pytest.fixture(autouse=True)
def _clean_gin(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # shipped configs resolve from anywhere, not only the checkout
    yield
    gin.clear_config()


def closure(relative):
    """The file `gin/<relative>` and every file it includes, in order: [(path, lines)]."""
    path = configs.GIN_DIR / relative
    lines = path.read_text().splitlines()
    files = []
    for line in lines:
        match = INCLUDE.match(line)
        if match:
            included = match["path"]
            assert included.startswith("gin/"), f"{relative}: include {included!r}"
            files += closure(included[len("gin/"):])
    return files + [(path, lines)]


def python_callable(name):
    """The Python function or class a configurable name stands for: the function
    `lgd_tf.cli.configs` registers under that name, else the object at that import path."""
    registered = getattr(configs, name.rsplit(".", 1)[-1], None)
    if name.startswith("lgd_tf.") and callable(registered):
        return registered
    module, _, attribute = name.rpartition(".")
    obj = keras if module.split(".")[0] == "keras" else None
    assert obj is not None, f"configurable {name!r} is neither lgd_tf's nor Keras'"
    for part in [*module.split(".")[1:], attribute]:
        obj = getattr(obj, part)
    return obj


def test_the_shipped_configs_are_these():
    assert configs.packaged_configs() == TOP
    assert "tiny.gin" in TOP and "base/lgd3d.gin" in BASE


@pytest.mark.parametrize("relative", TOP + BASE)
def test_config_resolves_from_anywhere(relative):
    expected = (configs.GIN_DIR / relative).resolve()
    assert pathlib.Path(configs.resolve_gin_file(f"gin/{relative}")).resolve() == expected
    assert pathlib.Path(configs.resolve_gin_file(relative)).resolve() == expected


def test_every_base_file_is_included_by_a_config():
    included = {str(path.relative_to(configs.GIN_DIR)) for name in TOP
                for path, _ in closure(name)}
    assert set(BASE) <= included, f"never included: {set(BASE) - included}"


@pytest.mark.parametrize("relative", TOP + BASE)
def test_every_binding_names_a_parameter(relative):
    """Each binding of the file (and its includes) names a parameter of the configured
    function's signature, and gin, having parsed the file, holds it."""
    # A base file alone may read macros that the configs including it define: no finalize.
    configs.parse([f"gin/{relative}"], finalize=relative in TOP)
    statements = 0
    for path, lines in closure(relative):
        for number, line in enumerate(lines, 1):
            where = f"{path.name}:{number}"
            match = BINDING.match(line)
            if not match:
                # Anything else is a macro, an include, a comment or a value's continuation.
                assert MACRO.match(line) or INCLUDE.match(line) or not line.strip() or (
                    line[0] in " #)]}"), f"{where}: not a binding, macro or include: {line}"
                statements += bool(MACRO.match(line))
                continue
            statements += 1
            parameters = inspect.signature(python_callable(match["name"])).parameters
            assert match["param"] in parameters, (
                f"{where}: {match['name']} has no parameter {match['param']!r}")
            assert parameters[match["param"]].kind in (
                inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
            scope = f"{match['scope']}/" if match["scope"] else ""
            gin.query_parameter(f"{scope}{match['name']}.{match['param']}")  # parsed by gin
    assert statements > 0


@pytest.mark.parametrize("name", TOP)
def test_every_macro_read_is_defined(name):
    text = "\n".join(line.split("#", 1)[0] for _, lines in closure(name) for line in lines)
    defined = {m["macro"] for line in text.splitlines() for m in [MACRO.match(line)] if m}
    read = set(re.findall(r"%([A-Z_][A-Z0-9_]*)", text))
    assert read <= defined, f"{name} reads undefined macros {read - defined}"


def _query(name, default=None):
    try:
        value = gin.query_parameter(name)
    except ValueError:
        return default
    return gin.query_parameter(str(value)) if str(value).startswith("%") else value


TINY = [f"lgd_tf.models.{builder}.{binding}" for builder in ("lgd3d", "lgd2d")
        for binding in ("stage_blocks = (1, 1, 1, 1)", "base_filters = 4", "sketch_dim = 16",
                        "inflate_from = None", "weights = None")]


@pytest.mark.parametrize("name", TOP)
def test_configured_model_builds_for_its_data(name):
    """At 4 base filters and one unit per stage, each stage's model builds; its clip length,
    channels and classes are those of the stage's training data settings."""
    configs.parse([f"gin/{name}"], TINY)
    builder = getattr(configs, _query("lgd_tf.training.fit_two_stage.model_fn").selector
                      .rsplit(".", 1)[-1])
    num_classes = _query("lgd_tf.training.data_sources.num_classes")
    defaults = inspect.signature(configs.train_dataset).parameters
    for stage in _query("lgd_tf.training.fit_two_stage.stages", ("stage1", "stage2")):
        with configs.STAGE_SCOPE(stage):
            model = builder(head=stage)  # as fit_two_stage builds it
            data = gin.get_bindings("lgd_tf.data.train_dataset")
        setting = "num_frames" if data["model"] == "3d" else "num_segments"
        frames = data.get(setting, defaults[setting].default)
        channels = 2 if data.get("modality", defaults["modality"].default) == "flow" else 3
        backbone = model.get_layer("backbone")
        assert type(backbone).__name__ == f"LGD{data['model'].upper()}Backbone", (name, stage)
        assert model.input.shape[1:] == (frames, None, None, channels), (name, stage)
        spec = model.compute_output_spec(keras.KerasTensor((1, frames, 64, 64, channels)))
        heads = ("global", "local") if stage == "stage1" else ("combined",)
        assert {k: tuple(v.shape) for k, v in spec.items()} == {
            head: (1, num_classes) for head in heads}, (name, stage)
