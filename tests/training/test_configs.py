"""The gin edge: shipped configs by bare name, today's gin names, operative config, errors."""

import json

import pytest

import gin
from lgd_tf.cli import configs
from lgd_tf.runs import run_folder
from lgd_tf.training.errors import TrainingError


@pytest.fixture(autouse=True)
def _clean_gin():
    yield
    gin.clear_config()


def test_a_bare_name_or_a_checkout_path_finds_the_shipped_config_from_anywhere(
        tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no gin/ folder here
    shipped = configs.GIN_DIR / "tiny.gin"
    assert configs.resolve_gin_file("tiny.gin") == str(shipped)
    assert configs.resolve_gin_file("gin/tiny.gin") == str(shipped)
    assert configs.resolve_gin_file("base/lgd3d.gin") == str(configs.GIN_DIR / "base" /
                                                             "lgd3d.gin")
    # tiny.gin includes 'gin/demo.gin': found through the search path, not the cwd.
    configs.parse(["tiny.gin"])
    assert gin.query_parameter("lgd_tf.models.lgd3d.base_filters") == 4
    # A user's own file of the same name in the cwd wins over the shipped one.
    (tmp_path / "tiny.gin").write_text("include 'gin/tiny.gin'\nlgd_tf.models.lgd3d.depth = "
                                       "101\n")
    configs.parse(["tiny.gin"])
    assert gin.query_parameter("lgd_tf.models.lgd3d.depth") == 101
    with pytest.raises(TrainingError, match=r"gin file not found: nope.gin \(shipped configs: "
                                            r"demo.gin, .*tiny.gin"):
        configs.parse(["nope.gin"])


@pytest.mark.parametrize("binding", [
    "lgd_tf.training.fit_stage.train_steps = 3",
    "stage2/lgd_tf.training.fit_stage.batch_size = 4",
    "lgd_tf.training.fit_stage.eval_every_steps = 10",
    "lgd_tf.training.data_sources.train_pattern = '/x'",
    "lgd_tf.training.fit_two_stage.mixed_precision = 'mixed_bfloat16'",
    "lgd_tf.training.evaluate_video_level.batch_size = 2",
    "lgd_tf.data.train_dataset.num_frames = 8",
    "lgd_tf.data.eval_dataset.num_clips = 3",
    "lgd_tf.data.build_demo_dataset.train_per_class = 2",
    "lgd_tf.models.lgd3d.sketch_dim = 64",
    "lgd3d.base_filters = 8",
    "lgd_tf.models.lgd2d.num_segments = 5",
    "lgd_tf.training.paper_step_decay.decay_epochs = 10",
    "keras.optimizers.SGD.momentum = 0.8",
    "keras.optimizers.schedules.CosineDecay.alpha = 0.1",
])
def test_the_gin_names_users_files_use_keep_working(binding):
    configs.parse(["gin/tiny.gin"], [binding])
    selector, value = (part.strip() for part in binding.split("="))
    assert repr(gin.query_parameter(selector)) == value.replace("'", "'")


def test_finalized_config_refuses_later_bindings():
    configs.parse(["gin/tiny.gin"])
    with pytest.raises(RuntimeError, match="locked"):
        gin.bind_parameter("lgd_tf.models.lgd3d.depth", 101)


def test_operative_config_carries_the_eval_sampling(tmp_path):
    """Even when the run never evaluated: the operative config of an older run (run.json
    without the video spec) is where `read_run` finds the sampling."""
    configs.parse(["gin/tiny.gin"], ["NUM_CLIPS = 3",
                                     "lgd_tf.data.eval_dataset.num_clips = %NUM_CLIPS"])
    model = configs.lgd3d(head="stage1")  # a configurable used by the run; eval_dataset never
    text = configs.operative_config_text()  # called
    assert "lgd3d.base_filters = 4" in text
    assert "# Parameters for eval_dataset:" in text and "eval_dataset.short_side = 32" in text
    (tmp_path / "operative_config.gin").write_text(text)
    gin.clear_config()
    (tmp_path / "run.json").write_text(json.dumps({
        "class_names": ["a"], "models": {"stage1": run_folder.model_architecture(model)}}))
    spec = run_folder.RunFolder(tmp_path).read_run().video_spec
    assert spec["eval"] == {"num_clips": 3, "num_crops": 1, "short_side": 32,
                            "temporal_stride": 1, "short_video": "loop"}
    # train_dataset was never called here, so its crop is not in the operative config.
    assert (spec["num_frames"], spec["crop_size"]) == (8, 112)


def test_a_missing_required_setting_is_one_line():
    configs.parse(["gin/tiny.gin"], ["lgd_tf.training.fit_two_stage.model_fn = None"])
    with pytest.raises(TrainingError, match="set fit_two_stage.model_fn"):
        configs.fit_two_stage(None, None, None)
