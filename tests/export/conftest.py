"""Fixtures of the export tests: a tiny LGD-3D trained to tell bright from dark clips, its
model_dir, its export (through the command line) and videos written with PyAV."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import lgd_tf
from lgd_tf.data import video
from tests.export.demo_model import recalibrate_batch_norm

CLASS_NAMES = ["dark", "bright"]
NUM_FRAMES = 4
# Sampling of the exported serve_frames / serve_encoded (small, to keep the tests fast).
SHORT_SIDE = 32
NUM_CLIPS = 2
# A traced graph (SavedModel, tf.function) vs eager Keras: same weights and ops, but Grappler /
# oneDNN may fuse and reorder float32 arithmetic (differences seen: ~2e-6 on features ~5).
GRAPH_TOL = {"rtol": 1e-4, "atol": 1e-5}
TINY = {"stage_blocks": (1, 1, 1, 1), "base_filters": 8, "num_frames": NUM_FRAMES,
        "sketch_dim": 64}


def tiny_lgd3d(num_classes=2, **kwargs):
    return lgd_tf.models.lgd3d(num_classes=num_classes, **{**TINY, **kwargs})


def bright_or_dark_clips(rng, labels, size=(32, 32), channels=3):
    """Clips of one grey level per clip plus mild noise: level in [150, 230] for label 1
    (bright), [20, 100] for label 0 (dark); noise +-10 per pixel."""
    labels = np.asarray(labels)
    levels = np.where(labels == 1, 150, 20) + rng.integers(0, 81, len(labels))
    noise = rng.integers(-10, 11, (len(labels), NUM_FRAMES, *size, channels))
    return np.clip(levels[:, None, None, None, None] + noise, 0, 255).astype(np.uint8)


def write_video(path, frames, fps=8, codec="mpeg4"):
    """Writes uint8 RGB frames (N, H, W, 3) to a video file with PyAV; returns `path`."""
    return video.write_frames(path, frames, codec=codec, fps=fps)


@pytest.fixture(scope="session")
def trained_model_dir(tmp_path_factory):
    """A model_dir (stage2.keras + class_names.txt) of a tiny LGD-3D that recognises bright
    vs dark clips: 24 Adam steps on 64 clips, then BN statistics recalibrated."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    model = tiny_lgd3d()
    labels = rng.integers(0, 2, 64)
    clips = bright_or_dark_clips(rng, labels)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss={"combined": keras.losses.SparseCategoricalCrossentropy(from_logits=True)})
    model.fit(clips.astype("float32"), {"combined": labels.astype("int32")}, batch_size=8,
              epochs=3, verbose=0)
    recalibrate_batch_norm(model, clips)
    model_dir = tmp_path_factory.mktemp("model_dir")
    model.save(model_dir / "stage2.keras")
    (model_dir / "class_names.txt").write_text("\n".join(CLASS_NAMES) + "\n")
    return model_dir


@pytest.fixture(scope="session")
def trained_model(trained_model_dir):
    return keras.saving.load_model(trained_model_dir / "stage2.keras", safe_mode=True)


@pytest.fixture(scope="session")
def exported(trained_model_dir, tmp_path_factory):
    """`python -m lgd_tf.export` run on the trained model_dir; returns (export_dir, stdout)."""
    export_dir = tmp_path_factory.mktemp("export") / "bright_dark"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, "-m", "lgd_tf.export", f"--model_dir={trained_model_dir}",
         f"--export_dir={export_dir}", f"--short_side={SHORT_SIDE}",
         f"--num_clips={NUM_CLIPS}", "--top_k=2"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return export_dir, result.stdout


@pytest.fixture(scope="session")
def videos(tmp_path_factory):
    """A bright and a dark 12-frame 40x56 video (noise around a grey level)."""
    rng = np.random.default_rng(1)
    folder = tmp_path_factory.mktemp("videos")
    paths = {}
    for name, label in (("dark", 0), ("bright", 1)):
        frames = bright_or_dark_clips(rng, [label] * 3, size=(40, 56)).reshape(12, 40, 56, 3)
        paths[name] = write_video(folder / f"{name}.mp4", frames)
    return paths


# The input spec of the recorded run: its training crop and evaluation sampling (not the
# Sec. 5.2 defaults, 15 clips at short side 120, so a command that ignores the record scores
# other views).
RUN_CROP = 28
RUN_EVAL = {"num_clips": NUM_CLIPS, "short_side": SHORT_SIDE}
# What train writes to operative_config.gin for the same settings (older code read it).
RUN_OPERATIVE_CONFIG = (f"eval_dataset.num_clips = {NUM_CLIPS}\n"
                        f"eval_dataset.short_side = {SHORT_SIDE}\n"
                        f"train_dataset.crop_size = {RUN_CROP}\n")


def record_run(model, folder, class_names=CLASS_NAMES, eval_sampling=None, crop_size=RUN_CROP):
    """A run folder for `model` as train leaves it: run.json (class names, architecture,
    video spec, data, finished stage2), class_names.txt, operative_config.gin, and
    stage2.keras carrying the video spec."""
    from lgd_tf.runs import run_folder

    run = run_folder.RunFolder(folder)
    architecture = run_folder.model_architecture(model)
    spec = run_folder.video_spec(architecture, crop_size=crop_size,
                                 eval_sampling=eval_sampling or RUN_EVAL)
    model.video_spec = spec
    run.record(list(class_names), {"stage2": architecture}, video_spec=spec,
               data={"train_pattern": "train-*.tfrecord", "eval_pattern": "eval-*.tfrecord"})
    run_folder.save_model(model, run.stage_model("stage2"))
    run.finish_stage("stage2")
    with open(run.file(run_folder.OPERATIVE_CONFIG), "w") as f:
        f.write(RUN_OPERATIVE_CONFIG)
    return folder


@pytest.fixture(scope="session")
def recorded_run(trained_model_dir, tmp_path_factory):
    """The trained model as a recorded training run (see `record_run`)."""
    model = keras.saving.load_model(trained_model_dir / "stage2.keras", safe_mode=True)
    return record_run(model, tmp_path_factory.mktemp("recorded") / "run")
