"""gin/: every configuration parses and says what the paper's table says."""

import pathlib

import keras
import pytest

import gin
from lgd_tf.cli import configs
from lgd_tf.training import schedules

REPO = pathlib.Path(__file__).resolve().parents[2]
CONFIGS = sorted(p.name for p in (REPO / "gin").glob("*.gin"))

# file: (builder, depth, use_lgd, variant, input channels, stages)
TABLE = {
    "lgd3d_r50.gin": ("lgd3d", 50, True, "lgd", 3, ("stage1", "stage2")),
    "lgd3d_r101.gin": ("lgd3d", 101, True, "lgd", 3, ("stage1", "stage2")),
    "lgd3d_r152.gin": ("lgd3d", 152, True, "lgd", 3, ("stage1", "stage2")),
    "lgd3d_r101_long.gin": ("lgd3d", 101, True, "lgd", 3, ("stage1", "stage2")),
    "lgd2d_r50.gin": ("lgd2d", 50, True, "lgd", 3, ("stage1", "stage2")),
    "lgd2d_r101.gin": ("lgd2d", 101, True, "lgd", 3, ("stage1", "stage2")),
    "lgd3d_r50_flow.gin": ("lgd3d", 50, True, "lgd", 2, ("stage1", "stage2")),
    "lgd3d_r101_flow.gin": ("lgd3d", 101, True, "lgd", 2, ("stage1", "stage2")),
    "lgd2d_r50_flow.gin": ("lgd2d", 50, True, "lgd", 2, ("stage1", "stage2")),
    "lgd2d_r101_flow.gin": ("lgd2d", 101, True, "lgd", 2, ("stage1", "stage2")),
    "p3d_r50.gin": ("lgd3d", 50, False, "lgd", 3, ("stage1",)),
    "tsn_r50.gin": ("lgd2d", 50, False, "lgd", 3, ("stage1",)),
    "lgd3d_r50_v1.gin": ("lgd3d", 50, True, "v1", 3, ("stage1",)),
    "lgd3d_r50_v2.gin": ("lgd3d", 50, True, "v2", 3, ("stage1",)),
    "lgd3d_r50_finetune.gin": ("lgd3d", 50, True, "lgd", 3, ("stage1", "stage2")),
}


@pytest.fixture(autouse=True)
def _clean_gin(monkeypatch):
    monkeypatch.chdir(REPO)
    yield
    gin.clear_config()


def _query(name, default=None):
    try:
        value = gin.query_parameter(name)
    except ValueError:
        return default
    if str(value).startswith("%"):  # a macro: its value
        return gin.query_parameter(str(value))
    return value


def test_every_paper_configuration_is_there():
    assert set(TABLE) | {"demo.gin", "tiny.gin"} == set(CONFIGS)


@pytest.mark.parametrize("name", CONFIGS)
def test_config_parses_and_starts_with_its_command(name):
    lines = (REPO / "gin" / name).read_text().splitlines()
    header = "\n".join(lines[:next(i for i, line in enumerate(lines)
                                   if not line.startswith("#"))])
    assert f"python -m lgd_tf.train --gin_file=gin/{name}" in header
    assert "# Cost:" in header
    configs.parse([f"gin/{name}"])


@pytest.mark.parametrize("name", sorted(TABLE))
def test_config_matches_the_table(name):
    builder, depth, use_lgd, variant, channels, stages = TABLE[name]
    configs.parse([f"gin/{name}"])
    model_fn = _query("lgd_tf.training.fit_two_stage.model_fn")
    assert model_fn.selector == f"lgd_tf.models.{builder}"
    prefix = f"lgd_tf.models.{builder}"
    assert _query(f"{prefix}.depth") == depth
    assert _query(f"{prefix}.use_lgd", True) == use_lgd
    assert _query(f"{prefix}.variant", "lgd") == variant
    assert _query(f"{prefix}.input_channels", 3) == channels
    assert tuple(_query("lgd_tf.training.fit_two_stage.stages", ("stage1", "stage2"))) == stages
    assert _query("lgd_tf.data.train_dataset.modality", "rgb") == ("flow" if channels == 2
                                                                   else "rgb")
    assert _query("lgd_tf.data.train_dataset.model") == builder[-2:]
    assert _query("keras.optimizers.SGD.momentum") == 0.9
    assert _query("lgd_tf.training.data_sources.num_classes") == (
        101 if "finetune" in name else 400)
    # Sec. 5.2 / Table 3: the R101 rows start from ImageNet ("Img"); the others from scratch.
    assert _query(f"{prefix}.inflate_from") == ("imagenet" if depth == 101 else None)
    assert _query(f"{prefix}.zero_init_global_residual") is None  # zero iff inflated
    assert _query(f"{prefix}.sketch_signed_sqrt_l2") is True  # Gao et al. 2016


def test_inflate_from_points_at_a_local_file():
    configs.parse(["gin/lgd3d_r101_flow.gin"],
                  ["INFLATE_FROM = '/data/resnet101.weights.h5'"])
    assert _query("lgd_tf.models.lgd3d.inflate_from") == "/data/resnet101.weights.h5"


def test_paper_schedule_resolves_to_sec_5_2():
    configs.parse(["gin/lgd3d_r50.gin"])
    schedule = configs.paper_step_decay()
    assert isinstance(schedule, keras.optimizers.schedules.PiecewiseConstantDecay)
    for step, rate in [(0, 0.01), (20 * 3750, 0.01), (20 * 3750 + 1, 0.001),
                       (40 * 3750 + 1, 0.0001), (50 * 3750, 0.0001)]:
        assert float(schedule(step)) == pytest.approx(rate)
    assert _query("lgd_tf.training.fit_stage.epochs") == 50
    assert _query("lgd_tf.training.fit_stage.batch_size") == 64


def test_long_config_changes_stage_2_only():
    configs.parse(["gin/lgd3d_r101_long.gin"])
    assert _query("lgd_tf.models.lgd3d.num_frames") == 16
    assert _query("stage2/lgd_tf.models.lgd3d.num_frames") == 128
    assert _query("stage2/lgd_tf.models.lgd3d.long_clip") is True
    assert _query("stage2/lgd_tf.training.fit_stage.batch_size") == 16


def test_paper_step_decay_scales_linearly_with_the_batch():
    schedule = schedules.paper_step_decay(0.01, steps_per_epoch=10, global_batch_size=256,
                                          reference_batch_size=64)
    assert float(schedule(0)) == pytest.approx(0.04)
    assert float(schedule(200)) == pytest.approx(0.04)
    assert float(schedule(201)) == pytest.approx(0.004)
    assert schedules.paper_step_decay(0.01, steps_per_epoch=10, num_epochs=20) == 0.01
    with pytest.raises(ValueError, match="Received"):
        schedules.paper_step_decay(0.01, steps_per_epoch=0)
