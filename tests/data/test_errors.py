"""Corrupt records: an error naming the file and record, or skipped and counted (ignore_errors)."""

import numpy as np
import pytest
import tensorflow as tf

from lgd_tf.data import SkipCounter, eval_dataset, schema, train_dataset, writer
from tests.data import helpers


def _good(label, name):
    return writer.make_sequence_example(helpers.indexed_frames(6), label, media_id=name)


def _bad_jpeg():
    example = _good(1, "badjpeg")
    example.feature_lists.feature_list[schema.IMAGE_KEY].feature[2].bytes_list.value[0] = (
        b"\xff\xd8 this is no JPEG")
    return example


def _truncated_jpeg():
    example = _good(1, "cutjpeg")
    value = example.feature_lists.feature_list[schema.IMAGE_KEY].feature[0].bytes_list.value
    value[0] = value[0][: len(value[0]) // 2]
    return example


def _missing_label():
    example = _good(1, "nolabel")
    del example.context.feature[schema.LABEL_INDEX_KEY]
    return example


def _no_frames():
    example = _good(1, "noframes")
    del example.feature_lists.feature_list[schema.IMAGE_KEY]
    return example


def _two_sizes():
    frames = list(helpers.indexed_frames(3)) + list(helpers.indexed_frames(3, 40, 40))
    return writer.make_sequence_example(frames, 1, media_id="twosizes")


CASES = {
    "two_sizes": (_two_sizes, "frames of different sizes"),
    "bad_jpeg": (_bad_jpeg, "not a valid JPEG"),
    "truncated_jpeg": (_truncated_jpeg, "not a valid JPEG"),
    "missing_label": (_missing_label, "missing `clip/label/index`"),
    "label_too_big": (lambda: _good(9, "big"), "label 9 >= num_classes 4"),
    "no_frames": (_no_frames, "no frames"),
}


def _shard(tmp_path, bad):
    records = [_good(0, "a"), bad, _good(2, "c")]
    path = str(tmp_path / "bad.tfrecord")
    writer.write_shard(path, [r.SerializeToString() for r in records])
    return path


def _eval(path, **kwargs):
    ds = eval_dataset(path, num_frames=4, num_clips=1, short_side=24, num_classes=4, **kwargs)
    return [m.numpy()[0] for _, _, m in ds]


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_record_raises_naming_file_and_record(tmp_path, case):
    make, reason = CASES[case]
    path = _shard(tmp_path, make())
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        _eval(path)
    message = str(info.value)
    assert "bad.tfrecord" in message and "bad record 1" in message and reason in message


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_record_skipped_and_counted(tmp_path, case):
    path = _shard(tmp_path, CASES[case][0]())
    counter = SkipCounter()
    assert _eval(path, ignore_errors=True, skip_counter=counter) == [b"a", b"c"]
    assert counter.count == 1


def test_truncated_shard(tmp_path):
    path = str(tmp_path / "cut.tfrecord")
    writer.write_shard(path, [_good(k, f"v{k}").SerializeToString() for k in range(3)])
    raw = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(raw[:-100])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"cut.tfrecord.*truncated or corrupt"):
        _eval(path)
    counter = SkipCounter()
    assert _eval(path, ignore_errors=True, skip_counter=counter) == [b"v0", b"v1"]
    assert counter.count == 1


def test_train_pipeline_skips_bad_records_inside_the_stream(tmp_path):
    path = _shard(tmp_path, _bad_jpeg())
    counter = SkipCounter()
    ds = train_dataset(path, 4, num_frames=4, resize=(24, 32), crop_size=16, num_classes=4,
                       ignore_errors=True, skip_counter=counter, shuffle_buffer=1)
    _, labels = next(iter(ds))
    assert set(labels.numpy().tolist()) <= {0, 2}
    assert counter.count >= 1
    with pytest.raises(tf.errors.InvalidArgumentError, match="bad.tfrecord"):
        for _ in train_dataset(path, 4, num_frames=4, resize=(24, 32), crop_size=16,
                               shuffle_buffer=1).take(3):
            pass


def test_good_records_are_not_flagged(tmp_path):
    frames = np.random.default_rng(0).integers(0, 256, (5, 24, 32, 3)).astype(np.uint8)
    path = helpers.write_records(tmp_path / "ok.tfrecord", [(frames, 3, "noisy")])
    counter = SkipCounter()
    assert _eval(path, ignore_errors=True, skip_counter=counter) == [b"noisy"]
    assert counter.count == 0


def test_damage_inside_a_jpeg_is_skipped_with_ignore_errors(tmp_path):
    example = _good(1, "scrambled")
    value = example.feature_lists.feature_list[schema.IMAGE_KEY].feature[0].bytes_list.value
    jpeg = bytearray(value[0])
    jpeg[2:-2] = bytes(len(jpeg) - 4)  # markers intact, everything between them zeroed
    value[0] = bytes(jpeg)
    path = _shard(tmp_path, example)
    with pytest.raises(tf.errors.InvalidArgumentError):
        _eval(path)
    assert _eval(path, ignore_errors=True) == [b"a", b"c"]


def test_distribute_datasets_from_function(tmp_path):
    for k in range(2):
        helpers.write_records(tmp_path / f"s{k}.tfrecord", [(helpers.indexed_frames(8), k, "v")])
    strategy = tf.distribute.get_strategy()
    dist = strategy.distribute_datasets_from_function(
        lambda ctx: train_dataset(str(tmp_path / "s*.tfrecord"), 2, num_frames=4,
                                  resize=(24, 32), crop_size=16, input_context=ctx))
    clips, labels = next(iter(dist))
    assert clips.shape == (2, 4, 16, 16, 3) and labels.dtype == tf.int32
