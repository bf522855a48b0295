"""train_dataset / eval_dataset: round trips, sampling, flow, Model Garden records, sharding."""

import io

import numpy as np
import PIL.Image
import pytest
import tensorflow as tf

from lgd_tf.data import eval_dataset, schema, train_dataset, writer
from tests.data import helpers


def _smooth_frames(n, h, w, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    frames = []
    for _ in range(n):
        a, b, c = rng.uniform(0.5, 3.0, size=3)
        img = np.stack([120 + 100 * np.sin(xx / (4 * a) + yy / (5 * b) + k * c)
                        for k in range(3)], axis=-1)
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
    return np.stack(frames)


def _first(ds):
    return [x.numpy() for x in next(iter(ds))]


def test_round_trip_preserves_pixels_and_labels(tmp_path):
    videos = [(_smooth_frames(6, 40, 40, seed=s), s + 2, f"v{s}") for s in range(3)]
    path = helpers.write_records(tmp_path / "a.tfrecord", videos)
    ds = train_dataset(path, 3, num_frames=6, resize=(40, 40), crop_size=40, flip=False,
                       shuffle_buffer=1, deterministic=True)
    clips, labels = _first(ds)
    assert clips.shape == (3, 6, 40, 40, 3) and clips.dtype == np.uint8
    assert labels.dtype == np.int32
    by_label = {label: frames for frames, label, _ in videos}
    for clip, label in zip(clips, labels, strict=True):
        original = by_label[int(label)].astype(int)
        # Independent JPEG round trip of the same frames (PIL): the pipeline loses no more.
        reference = np.stack([np.asarray(PIL.Image.open(io.BytesIO(writer.encode_jpeg(f))))
                              for f in by_label[int(label)]]).astype(int)
        diff = np.abs(clip - reference)  # decoders differ only in IDCT / chroma upsampling
        assert diff.mean() < 1.5 and diff.max() <= 8
        jpeg_error = np.abs(reference - original).mean()
        assert jpeg_error < 5 and np.abs(clip - original).mean() <= jpeg_error + 0.5
    assert sorted(labels.tolist()) == [2, 3, 4]


def test_3d_train_clips_are_consecutive_frames_with_stride(tmp_path):
    path = helpers.write_records(tmp_path / "a.tfrecord",
                                 [(helpers.indexed_frames(30), 1, "v")])
    ds = train_dataset(path, 4, num_frames=5, temporal_stride=2, resize=(24, 32), crop_size=16,
                       seed=1, shuffle_buffer=1)
    starts = set()
    for clips, labels in ds.take(10):
        for clip in clips.numpy():
            idx = helpers.frame_indices(clip)
            np.testing.assert_array_equal(np.diff(idx), 2)
            assert idx[0] >= 0 and idx[-1] <= 29
            starts.add(idx[0])
        assert clips.shape == (4, 5, 16, 16, 3)
        np.testing.assert_array_equal(labels, 1)
    assert len(starts) > 8  # random start, not always the same


def test_2d_train_tsn_takes_one_frame_per_segment(tmp_path):
    path = helpers.write_records(tmp_path / "a.tfrecord", [(helpers.indexed_frames(30), 0, "v")])
    ds = train_dataset(path, 8, model="2d", num_segments=3, resize=(24, 32), crop_size=20,
                       seed=2, shuffle_buffer=1)
    clips, _ = _first(ds)
    assert clips.shape == (8, 3, 20, 20, 3)
    for clip in clips:
        idx = helpers.frame_indices(clip)
        assert 0 <= idx[0] < 10 <= idx[1] < 20 <= idx[2] < 30


@pytest.mark.parametrize("mode,expected", [("loop", [0, 1, 2, 0, 1, 2, 0]),
                                           ("pad", [0, 1, 2, 2, 2, 2, 2])])
def test_short_videos_loop_or_pad(tmp_path, mode, expected):
    path = helpers.write_records(tmp_path / "a.tfrecord", [(helpers.indexed_frames(3), 0, "v")])
    clips, _ = _first(train_dataset(path, 1, num_frames=7, resize=(24, 32), crop_size=16,
                                    short_video=mode, shuffle_buffer=1, deterministic=True))
    idx = helpers.frame_indices(clips[0])
    if mode == "loop":  # a random start, then wrapping around
        np.testing.assert_array_equal(idx, (idx[0] + np.arange(7)) % 3)
    else:
        np.testing.assert_array_equal(idx, expected)
    views, _, _ = _first(eval_dataset(path, num_frames=7, num_clips=2, short_side=24,
                                      short_video=mode))
    np.testing.assert_array_equal(helpers.frame_indices(views[0, 1]), expected)


def test_flow_modality_two_channels_and_flip_negates_x(tmp_path):
    frames = helpers.indexed_frames(5)
    flow_img = np.zeros((4, 24, 32, 3), np.uint8)
    flow_img[..., 0], flow_img[..., 1], flow_img[..., 2] = 200, 50, 128
    path = helpers.write_records(tmp_path / "a.tfrecord", [(frames, 0, "v", flow_img)])
    ds = train_dataset(path, 16, modality="flow", num_frames=4, resize=(24, 32), crop_size=16,
                       seed=3, shuffle_buffer=1)
    clips, _ = _first(ds)
    assert clips.shape == (16, 4, 16, 16, 2)
    x = clips[..., 0].reshape(16, -1).mean(axis=1)
    y = clips[..., 1].reshape(16, -1).mean(axis=1)
    np.testing.assert_allclose(y, 50, atol=2)
    flipped = np.abs(x - (255 - 200)) < 2
    assert np.all(flipped | (np.abs(x - 200) < 2)) and 0 < flipped.sum() < 16
    views, _, _ = _first(eval_dataset(path, modality="flow", num_frames=4, num_clips=1,
                                      short_side=24))
    assert views.shape == (1, 1, 4, 24, 32, 2)


def test_eval_yields_all_views_of_each_video_in_order(tmp_path):
    videos = [(helpers.indexed_frames(20 + k, 24, 40), k, f"video{k}") for k in range(3)]
    path = helpers.write_records(tmp_path / "a.tfrecord", videos)
    out = list(eval_dataset(path, 2, num_frames=4, num_clips=5, short_side=12))
    views = np.concatenate([v.numpy() for v, _, _ in out])
    labels = np.concatenate([lab.numpy() for _, lab, _ in out])
    ids = np.concatenate([m.numpy() for _, _, m in out])
    assert views.shape == (3, 5, 4, 12, 20, 3)
    np.testing.assert_array_equal(labels, [0, 1, 2])
    assert ids.tolist() == [b"video0", b"video1", b"video2"]
    for k in range(3):
        starts = np.round(np.linspace(0, 20 + k - 4, 5)).astype(int)
        for clip, start in zip(views[k], starts, strict=True):
            np.testing.assert_array_equal(helpers.frame_indices(clip), np.arange(start, start + 4))
    crops = next(iter(eval_dataset(path, 3, num_frames=4, num_clips=5, num_crops=3,
                                   short_side=12)))[0]
    assert crops.shape == (3, 15, 4, 12, 12, 3)
    tsn = next(iter(eval_dataset(path, model="2d", num_segments=3, short_side=12)))[0]
    assert tsn.shape == (1, 10, 3, 12, 20, 3)  # 10 frame triples by default (Sec. 5.2)


def test_eval_decodes_in_a_parallel_map_and_prefetches_whole_batches(tmp_path):
    """Parsing and decoding run ahead of the consumer (evaluation's forward): a parallel map
    over records, then batches of several videos (grouped by frame size), prefetched."""
    path = helpers.write_records(tmp_path / "a.tfrecord",
                                 [(helpers.indexed_frames(8), k, f"v{k}") for k in range(2)])
    for batch_size, batching in ((1, "BatchDatasetV2"), (4, "GroupByWindowDataset")):
        ds = eval_dataset(path, batch_size, num_frames=4, num_clips=2, short_side=24)
        graph = tf.compat.v1.GraphDef.FromString(ds._as_serialized_graph().numpy())
        nodes = {n.name: n for n in graph.node}
        prefetch = [n for n in graph.node if n.op == "PrefetchDataset"]
        assert len(prefetch) == 1
        source = nodes[prefetch[0].input[0].split(":")[0]]
        assert source.op == batching  # the prefetched elements are whole batches
        maps = [n for n in graph.node if n.op == "ParallelMapDatasetV2"]
        assert maps and "make_views" in " ".join(n.attr["f"].func.name for n in maps)
    views = next(iter(eval_dataset(path, 4, num_frames=4, num_clips=2, short_side=24)))[0]
    assert views.shape[:2] == (2, 2)  # both videos' views in one batch
    # Without tf.data's autotuner: deleting the iterator at the end of an evaluation waited
    # 2-17 s for its thread in some evaluations. Training keeps it (one iterator per stage).
    assert eval_dataset(path, 4, num_frames=4, short_side=24).options().autotune.enabled is False
    assert train_dataset(path, 2, num_frames=4, crop_size=16).options().autotune.enabled


def test_reads_model_garden_form_records(tmp_path):
    frames = helpers.indexed_frames(8)
    example = tf.train.SequenceExample()
    example.context.feature[schema.LABEL_INDEX_KEY].int64_list.value.append(5)
    images = example.feature_lists.feature_list[schema.IMAGE_KEY]
    for f in frames:
        images.feature.add().bytes_list.value.append(tf.io.encode_jpeg(f).numpy())
    path = str(tmp_path / "mg.tfrecord")
    writer.write_shard(path, [example.SerializeToString()])
    clips, labels = _first(train_dataset(path, 2, num_frames=4, resize=(24, 32), crop_size=16,
                                         num_classes=6))
    np.testing.assert_array_equal(labels, [5, 5])
    assert np.all(np.diff(helpers.frame_indices(clips[0])) == 1)
    views, labels, ids = _first(eval_dataset(path, num_frames=8, num_clips=1, short_side=24))
    np.testing.assert_array_equal(helpers.frame_indices(views[0, 0]), np.arange(8))
    assert ids.tolist() == [b""] and labels.tolist() == [5]


def test_deterministic_mode_repeats_exactly(tmp_path):
    for k in range(3):
        videos = [(helpers.indexed_frames(20), 3 * k + j, f"v{k}{j}") for j in range(3)]
        helpers.write_records(tmp_path / f"s{k}.tfrecord", videos)

    def batches():
        ds = train_dataset(str(tmp_path / "s*.tfrecord"), 4, num_frames=4, resize=(24, 32),
                           crop_size=16, deterministic=True, seed=7, shuffle_buffer=4)
        return [(c.numpy(), y.numpy()) for c, y in ds.take(4)]
    first, second = batches(), batches()
    for (c1, y1), (c2, y2) in zip(first, second, strict=True):
        np.testing.assert_array_equal(c1, c2)
        np.testing.assert_array_equal(y1, y2)
    seen = np.concatenate([y for _, y in first])
    assert len(set(seen.tolist())) > 3  # records from several shards, shuffled


def test_input_context_shards_by_file_and_batches_per_replica(tmp_path):
    for k in range(4):
        helpers.write_records(tmp_path / f"s{k}.tfrecord",
                              [(helpers.indexed_frames(8), k, f"f{k}")])
    seen = []
    for pipeline in range(2):
        ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline,
                                         num_replicas_in_sync=2)
        ds = train_dataset(str(tmp_path / "s*.tfrecord"), 8, num_frames=4, resize=(24, 32),
                           crop_size=16, input_context=ctx, shuffle_buffer=1)
        clips, labels = _first(ds)
        assert clips.shape[0] == 4  # global batch 8 over 2 replicas
        seen.append(set(labels.tolist()))
        ids = [m.numpy() for _, _, m in eval_dataset(str(tmp_path / "s*.tfrecord"), 2,
                                                     num_frames=4, num_clips=1,
                                                     short_side=24, input_context=ctx)]
        assert [len(i) for i in ids] == [1, 1]  # 2 files each, batch 2 / 2 replicas
    assert seen[0].isdisjoint(seen[1]) and seen[0] | seen[1] == {0, 1, 2, 3}


def test_argument_errors(tmp_path):
    path = helpers.write_records(tmp_path / "a.tfrecord", [(helpers.indexed_frames(4), 0, "v")])
    with pytest.raises(ValueError, match="crop_size"):
        train_dataset(path, 2, resize=(24, 32), crop_size=30)
    with pytest.raises(ValueError, match="No file matches"):
        train_dataset(str(tmp_path / "nothing-*"), 2)
    with pytest.raises(ValueError, match="modality"):
        train_dataset(path, 2, modality="depth")
    with pytest.raises(ValueError, match="num_crops"):
        eval_dataset(path, num_crops=5)
    with pytest.raises(ValueError, match="batch_size"):
        eval_dataset(path, batch_size=0)


_MIRRORED = r"""
import sys
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from lgd_tf.data import train_dataset
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
def fn(ctx):
    return train_dataset(sys.argv[1], 8, num_frames=4, resize=(24, 32), crop_size=16,
                         input_context=ctx)
dist = strategy.distribute_datasets_from_function(fn)
clips, labels = next(iter(dist))
shapes = [tuple(v.shape) for v in strategy.experimental_local_results(clips)]
print("SHAPES", shapes, strategy.num_replicas_in_sync)
"""


@pytest.mark.subprocess
def test_mirrored_strategy_gets_per_replica_batches(tmp_path, subprocess_env):
    import subprocess
    import sys

    helpers.write_records(tmp_path / "s.tfrecord", [(helpers.indexed_frames(8), 0, "v")])
    result = subprocess.run([sys.executable, "-c", _MIRRORED, str(tmp_path / "s.tfrecord")],
                            capture_output=True, text=True, env=subprocess_env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "SHAPES [(4, 4, 16, 16, 3), (4, 4, 16, 16, 3)] 2" in result.stdout
