"""One run, one record: train writes it, evaluate reads it (no --gin_file), matches classes by
name, respects the run's lock; the tiny config trains on the data a binding gives it."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from lgd_tf.data import writer
from lgd_tf.runs import run_folder
from tests.locks import lock_held_by_another_process

pytestmark = pytest.mark.subprocess

NAMES = ["class0", "class1", "class2"]


def _write_data(folder, names, videos_per_class, split, seed):
    """One shard of random 8-frame 32 x 32 videos whose label strings are `names`, and the
    class_names.txt beside it (as the TFRecord builder writes them)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    records = [writer.make_sequence_example(
        rng.integers(0, 256, (8, 32, 32, 3)).astype(np.uint8), label,
        label_string=names[label], media_id=f"{split}_{label}_{k}").SerializeToString()
        for label in range(len(names)) for k in range(videos_per_class)]
    writer.write_shard(str(folder / f"{split}-00000-of-00001.tfrecord"), records)
    (folder / "class_names.txt").write_text("\n".join(names) + "\n")
    return str(folder / f"{split}-*")


def _snapshot(folder):
    """{relative path: bytes} of every file under `folder`."""
    return {os.path.relpath(os.path.join(root, name), folder):
            open(os.path.join(root, name), "rb").read()
            for root, _, names in os.walk(folder) for name in names}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """gin/tiny.gin trained and evaluated, as a subprocess, on 3-class data given by
    TRAIN_PATTERN / EVAL_PATTERN (not the demo set): (run folder, data, process)."""
    from tests.conftest import REPO_ROOT

    root = tmp_path_factory.mktemp("run_record")
    data = {"train": _write_data(root / "data", NAMES, 2, "train", 0),
            "eval": _write_data(root / "data", NAMES, 1, "eval", 1),
            "demo": root / "demo_cache"}
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    process = subprocess.run(
        [sys.executable, "-m", "lgd_tf.train", "--gin_file=gin/tiny.gin",
         f"--model_dir={root / 'run'}", f"--gin_bindings=TRAIN_PATTERN='{data['train']}'",
         f"--gin_bindings=EVAL_PATTERN='{data['eval']}'", "--gin_bindings=NUM_CLASSES=3",
         f"--gin_bindings=lgd_tf.training.data_sources.demo_cache_dir='{data['demo']}'"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert process.returncode == 0, process.stderr[-3000:]
    return root / "run", data, process


def test_tiny_config_trains_and_evaluates_on_the_patterns_given(trained):
    run, data, process = trained
    record = json.loads((run / "run.json").read_text())
    assert record["class_names"] == NAMES  # the data's classes, not the demo set's 12
    assert record["data"] == {"train_pattern": data["train"], "eval_pattern": data["eval"]}
    assert not data["demo"].exists()  # the demo set was neither built nor used
    assert f"data: 3 classes, train {data['train']}" in process.stdout
    results = json.loads((run / "eval_results.json").read_text())
    assert results["eval_pattern"] == data["eval"] and results["num_videos"] == 3
    # The record: tiny.gin's sampling (2 clips at short side 32, crop 28), finished stages.
    assert record["video_spec"] == {
        "model_type": "lgd3d", "num_frames": 8, "crop_size": 28, "modality": "rgb",
        "eval": {"num_clips": 2, "num_crops": 1, "short_side": 32, "temporal_stride": 1,
                 "short_video": "loop"}}
    assert record["finished_stages"] == ["stage1", "stage2"]
    # TensorFlow's remapper line (graph optimisation of the train step) is not shown.
    assert "remapper failed" not in process.stderr, process.stderr[-2000:]


def test_a_macro_binding_the_config_ignores_exits_2_naming_it(tmp_path, capsys, monkeypatch):
    import gin
    from lgd_tf import train
    from tests.conftest import REPO_ROOT

    monkeypatch.chdir(REPO_ROOT)
    try:
        code = train.run(["lgd_tf.train", "--gin_file=gin/tiny.gin",
                          f"--model_dir={tmp_path / 'run'}",
                          "--gin_bindings=TRAIN_PATERN='data/train-*'"])
    finally:
        gin.clear_config()
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "--gin_bindings=\"TRAIN_PATERN='data/train-*'\": the config does not use " \
           "TRAIN_PATERN" in err[0]
    assert not (tmp_path / "run").exists()


def _evaluate(argv, capsys):
    import gin
    from lgd_tf import evaluate

    try:
        code = evaluate.run(["lgd_tf.evaluate", *argv])
    finally:
        gin.clear_config()
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip().splitlines()


def test_evaluate_needs_no_gin_file_on_a_run_folder(trained, tmp_path, capsys):
    """The record gives the data, the classes and the sampling: the same results as the
    evaluation at the end of training (same model, same views), into --output_dir."""
    run, data, _ = trained
    code, out, err = _evaluate([f"--model_dir={run}", f"--output_dir={tmp_path}"], capsys)
    assert code == 0, err
    first = out.splitlines()[0]
    assert first == (f"evaluating stage2.keras of {run} on {data['eval']}: 2 clips x 1 crops "
                     "at short side 32 (from the run record)")
    again = json.loads((tmp_path / "eval_results.json").read_text())
    trained_results = json.loads((run / "eval_results.json").read_text())
    assert again["views_per_video"] == 2 and again["num_videos"] == 3
    for key in ("top1", "top5", "per_class_accuracy"):
        assert again[key] == trained_results[key], key
    with np.load(tmp_path / "eval_scores.npz") as new, np.load(run / "eval_scores.npz") as old:
        np.testing.assert_allclose(new["scores"], old["scores"], atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == sorted(
        set(run_folder.EVAL_FILES) | {"stage2"})


@pytest.mark.parametrize("with_gin_file", [False, True])
def test_evaluate_on_data_with_other_class_names_writes_nothing(trained, tmp_path, capsys,
                                                                 monkeypatch, with_gin_file):
    """Same number of classes, other names: refused by name (before: scored by index, the
    data's names printed and the run's results replaced)."""
    from tests.conftest import REPO_ROOT

    run, _, _ = trained
    other = _write_data(tmp_path / "other", ["x0", "x1", "x2"], 1, "eval", 2)
    before = _snapshot(run)
    monkeypatch.chdir(REPO_ROOT)
    argv = [f"--model_dir={run}"]
    if with_gin_file:
        argv += ["--gin_file=gin/tiny.gin", "--gin_bindings=NUM_CLASSES=3",
                 f"--gin_bindings=lgd_tf.training.data_sources.eval_pattern='{other}'"]
    else:
        argv += [f"--gin_bindings=EVAL_PATTERN='{other}'"]
    code, _, err = _evaluate(argv, capsys)
    assert code == 2 and len(err) == 1, err
    assert err[0] == (f"lgd_tf.evaluate: error: the eval data {other} has other classes than "
                      f"the run {run} (class 0 is 'class0' in the run and 'x0' in the data); "
                      "give data built with the run's class names, or evaluate the run "
                      "trained on these classes")
    assert _snapshot(run) == before


def test_evaluate_while_train_holds_the_run_is_refused_naming_its_pid(trained, tmp_path,
                                                                      capsys):
    """Another process holds the run folder's lock (as train does while it runs): evaluate
    refuses with its pid and writes nothing; with --output_dir it writes only there."""
    run, _, _ = trained
    with lock_held_by_another_process(run) as holder_pid:
        before = _snapshot(run)
        code, _, err = _evaluate([f"--model_dir={run}"], capsys)
        assert code == 1 and len(err) == 1, err
        assert err[0].startswith(f"lgd_tf.evaluate: error: {run} is in use by pid "
                                 f"{holder_pid} on "), err
        assert err[0].endswith("wait for that run to end, or give --output_dir to write the "
                               "results elsewhere")
        assert _snapshot(run) == before
        code, _, err = _evaluate([f"--model_dir={run}", f"--output_dir={tmp_path / 'out'}"],
                                 capsys)
        assert code == 0, err
        assert _snapshot(run) == before
        assert (tmp_path / "out" / "eval_results.json").exists()

