"""The data build on Apache Beam (FnApiRunner, 2 worker processes) and the lean workers of
both runners: no TensorFlow in any worker nor in the command's process, the same shards as
the local runner, records the input pipeline reads, and workers under 400 MB on 320x240."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from lgd_tf.data import eval_dataset
from tests.data import helpers

pytest.importorskip("apache_beam")
pytestmark = pytest.mark.subprocess

NAMES = [f"v{i}" for i in range(5)] + ["big"]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Five tiny videos and one 320x240 of 30 frames (2 classes), and their CSV."""
    root = tmp_path_factory.mktemp("beam")
    folder = root / "videos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in NAMES:
        shape = (30, 240, 320, 3) if name == "big" else (6, 24, 32, 3)
        helpers.write_video(folder / f"{name}.mp4", rng.integers(0, 255, shape, np.uint8),
                            "libx264")
    csv_path = root / "labels.csv"
    csv_path.write_text("path,label\n" + "".join(f"{n}.mp4,c{i % 2}\n"
                                                 for i, n in enumerate(NAMES)))
    return folder, csv_path


def _build(videos, out, env, *extra, python_options=()):
    """Runs `python -m lgd_tf.build_tfrecords` with worker probes: (stdout, stderr, the
    command's pid, the probes its workers wrote)."""
    folder, csv_path = videos
    probes = out.parent / f"{out.name}.probes"
    for old in probes.glob("*.json"):
        old.unlink()
    env = dict(env, LGD_BUILD_PROBE=str(probes))
    process = subprocess.Popen(
        [sys.executable, *python_options, "-m", "lgd_tf.build_tfrecords",
         f"--videos_dir={folder}", f"--labels_csv={csv_path}", f"--output_dir={out}",
         "--num_shards=4", "--num_workers=2", "--short_side=16", *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = process.communicate(timeout=240)
    assert process.returncode == 0, stderr[-3000:]
    found = [json.loads(p.read_text()) for p in sorted(probes.glob("*.json"))]
    return stdout, stderr, process.pid, found


def _shards(out):
    return {name: (out / name).read_bytes() for name in sorted(os.listdir(out))
            if name.endswith(".tfrecord")}


@pytest.mark.parametrize("flow", [False, True], ids=["rgb", "flow"])
def test_beam_build_matches_the_local_runner_without_tensorflow_in_workers(
        videos, tmp_path, subprocess_env, flow):
    extra = ["--flow"] if flow else []
    beam_out, _, beam_pid, beam_probes = _build(videos, tmp_path / "beam", subprocess_env,
                                                "--runner=beam", *extra)
    _, local_err, local_pid, local_probes = _build(videos, tmp_path / "local", subprocess_env,
                                                   *extra, python_options=("-X", "importtime"))
    assert "written 6 videos into 4 shards" in beam_out
    # Beam: at least two worker processes did the work, none of them the command's own.
    pids = {p["pid"] for p in beam_probes}
    assert len(pids) >= 2, beam_probes
    assert beam_pid not in pids
    for probe in beam_probes + local_probes:
        assert not probe["tensorflow"] and not probe["keras"], probe
        assert probe["maxrss_kb"] < 400 * 1024, probe  # a 320x240 video among them
    assert local_probes and all(p["ppid"] == local_pid for p in local_probes)
    # The local command's own process never imported TensorFlow (-X importtime lists every
    # module it imported, before and after it replaced itself by the TF-free driver).
    imported = {line.rsplit("|", 1)[-1].strip() for line in local_err.splitlines()
                if line.startswith("import time:")}
    assert "lgd_io.builder.local" in imported
    assert not {m for m in imported if m.split(".")[0] in ("tensorflow", "keras")}
    # The same shards, byte for byte (so the same media ids in each).
    assert _shards(tmp_path / "beam") == _shards(tmp_path / "local")
    # Records that the input pipeline reads: every video once, its label and frames.
    modality = "flow" if flow else "rgb"
    seen = {}
    for views, labels, media_ids in eval_dataset(str(tmp_path / "beam" / "train-*"),
                                                 modality=modality, num_frames=4,
                                                 num_clips=2, short_side=16):
        seen[media_ids.numpy()[0].decode()] = (int(labels[0]), views.shape[-1])
    assert seen == {n: (i % 2, 2 if flow else 3) for i, n in enumerate(NAMES)}
    # A rerun keeps every finished shard and starts no worker.
    again, _, _, probes = _build(videos, tmp_path / "beam", subprocess_env, "--runner=beam",
                                 *extra)
    assert "written 0 videos into 0 shards, kept 4 finished shards" in again and not probes



def test_beam_pipeline_options_pass_through(videos, tmp_path, subprocess_env):
    """Options after `--` reach Beam: the in-memory FnApiRunner encodes in the command's own
    process (one pid, the command's), where the default would start worker processes."""
    stdout, _, pid, probes = _build(
        videos, tmp_path / "out", subprocess_env, "--runner=beam", "--",
        "--runner=FnApiRunner", "--direct_num_workers=1", "--direct_running_mode=in_memory")
    assert "written 6 videos into 4 shards" in stdout
    assert {p["pid"] for p in probes} == {pid}
    assert not any(p["tensorflow"] for p in probes)
