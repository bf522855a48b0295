"""Users' `lgd_tf.training.fit_stage.<name>` bindings reach the stage's `StageConfig`.

`fit_stage` is the gin entry point of `loop.run_stage`; every binding of it in a shipped gin
file (the configs and their bases, per-stage scopes included) must name one of its keywords,
and the value gin binds must be the one in the `StageConfig` the loop receives.
"""

import dataclasses
import inspect
import pathlib
import re

import pytest

import gin
from lgd_tf.cli import configs
from lgd_tf.training import loop
from lgd_tf.training.stage_config import StageConfig

REPO = pathlib.Path(__file__).resolve().parents[2]
GIN_FILES = sorted({*REPO.glob("gin/**/*.gin"), *REPO.glob("lgd_tf/gin/**/*.gin")})
BINDING = re.compile(r"^\s*(?:([\w.]+)/)?lgd_tf\.training\.fit_stage\.(\w+)\s*=", re.M)
RUNTIME = {"stage", "model", "strategy", "train_pattern", "stage_dir", "num_classes",
           "evaluate_fn", "stop"}


def _bindings():
    return [(path.relative_to(REPO).as_posix(), scope, name)
            for path in GIN_FILES for scope, name in BINDING.findall(path.read_text())]


def test_the_shipped_files_bind_fit_stage():
    names = {name for _, _, name in _bindings()}
    assert {"train_steps", "batch_size", "epochs", "eval_every_steps"} <= names


@pytest.mark.parametrize(("path", "scope", "name"), _bindings())
def test_every_binding_names_a_keyword_and_a_config_field(path, scope, name):
    assert name in inspect.signature(loop.fit_stage).parameters, (path, name)
    assert name in {f.name for f in dataclasses.fields(StageConfig)}, (path, name)
    assert scope in ("", "stage1", "stage2"), (path, scope)


def test_fit_stage_keywords_are_the_config_fields_plus_the_runtime_objects():
    keywords = set(inspect.signature(loop.fit_stage).parameters)
    fields = {f.name for f in dataclasses.fields(StageConfig)}
    assert keywords == (fields | RUNTIME)
    defaults = {k: p.default for k, p in inspect.signature(loop.fit_stage).parameters.items()
                if p.default is not inspect.Parameter.empty and k in fields}
    assert defaults == {f.name: f.default for f in dataclasses.fields(StageConfig)
                        if f.default is not dataclasses.MISSING}


@pytest.fixture
def received(monkeypatch):
    """The (config, evaluate_fn, stop) that `run_stage` is called with; gin cleared after."""
    calls = []
    monkeypatch.setattr(loop, "run_stage", lambda config, model, strategy, **kwargs: (
        calls.append((config, kwargs))))
    monkeypatch.chdir(REPO)
    yield calls
    gin.clear_config()


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "gin").glob("*.gin")))
def test_gin_values_reach_the_stage_config(received, name):
    configs.parse([f"gin/{name}"])
    for stage in ("stage1", "stage2"):
        with gin.config_scope(stage):
            configs.fit_stage(stage, None, None, "train-*", f"/run/{stage}", 5, stop="S")
    for (config, kwargs), stage in zip(received, ("stage1", "stage2"), strict=True):
        assert (config.stage, config.stage_dir, config.num_classes) == (stage, f"/run/{stage}", 5)
        assert kwargs == {"evaluate_fn": None, "stop": "S"}
        expected = _bound(stage)
        assert "train_steps" in expected
        for field, value in expected.items():
            if value is callable:  # a configurable reference: gin's wrapped callable
                assert callable(getattr(config, field)), (name, stage, field)
            else:
                assert getattr(config, field) == value, (name, stage, field)


def _bound(stage):
    """{field: value} that gin binds for fit_stage in `stage`'s scope (train_steps resolved)."""
    bound = {}
    for field in dataclasses.fields(StageConfig):
        for key in (f"{stage}/lgd_tf.training.fit_stage.{field.name}",
                    f"lgd_tf.training.fit_stage.{field.name}"):
            try:
                value = gin.query_parameter(key)
            except ValueError:
                continue
            if str(value).startswith("%"):  # a macro: its value
                value = gin.query_parameter(str(value))
            if str(value).startswith("@"):  # a reference
                value = callable
            bound[field.name] = value
            break
    if "train_steps" not in bound and "epochs" in bound:
        bound["train_steps"] = round(float(bound["epochs"]) * int(bound["steps_per_epoch"]))
    return bound
