"""Corrupt records: an error naming the file and record, or skipped and counted (ignore_errors)."""

import re

import numpy as np
import pytest
import tensorflow as tf

from lgd_tf.data import SkipCounter, eval_dataset, pipelines, schema, train_dataset, writer
from lgd_tf.training.errors import one_line
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


def _line(error):
    """The pipeline's one line inside a TensorFlow error (what `lgd_tf.*` commands print)."""
    found = re.search(r"(lgd_tf\.data: .*?)\]?$", one_line(error))
    return found.group(1).replace("\\'", "'")


def _train(path, **kwargs):
    return train_dataset(path, 2, num_frames=4, resize=(24, 32), crop_size=16, num_classes=4,
                         shuffle_buffer=1, ignore_errors=True, **kwargs)


def test_every_record_bad_stops_after_max_consecutive_skips(tmp_path):
    """The repeated training stream of all-bad data stops with one line naming the first bad
    record, instead of skipping forever."""
    path = str(tmp_path / "allbad.tfrecord")
    writer.write_shard(path, [_good(9, "nine").SerializeToString(),
                              _no_frames().SerializeToString()])
    counter = SkipCounter()
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        next(iter(_train(path, skip_counter=counter, max_consecutive_skips=7,
                         deterministic=True)))
    line = _line(info.value)
    assert line.startswith("lgd_tf.data: 7 records in a row were bad (every record is bad?); "
                           "first bad: record 0 of "), line
    assert line.endswith("allbad.tfrecord (media_id 'nine'): label 9 >= num_classes 4"), line
    assert counter.count >= 6  # records behind the failing one may be counted too
    with pytest.raises(tf.errors.InvalidArgumentError, match="2 records in a row were bad"):
        list(eval_dataset(path, num_frames=4, num_clips=1, short_side=24, num_classes=4,
                          ignore_errors=True, max_consecutive_skips=2))
    with pytest.raises(ValueError, match="max_consecutive_skips"):
        _train(path, max_consecutive_skips=0)


def test_a_good_record_resets_the_run_of_skips(tmp_path):
    """bad, bad, good repeated: runs of 2 never reach a limit of 3, so training goes on."""
    path = str(tmp_path / "mixed.tfrecord")
    writer.write_shard(path, [_good(9, "nine").SerializeToString(),
                              _no_frames().SerializeToString(),
                              _good(2, "two").SerializeToString()])
    counter = SkipCounter()
    labels = [y.numpy().tolist() for _, y in _train(
        path, skip_counter=counter, max_consecutive_skips=3, deterministic=True).take(4)]
    assert labels == [[2, 2]] * 4
    assert counter.count >= 14  # 8 good records kept, 2 skipped before each
    with pytest.raises(tf.errors.InvalidArgumentError, match="2 records in a row"):
        next(iter(_train(path, max_consecutive_skips=2, deterministic=True)))


def _named(label, name, label_string):
    return writer.make_sequence_example(helpers.indexed_frames(6), label, media_id=name,
                                        label_string=label_string).SerializeToString()


def test_label_string_is_checked_against_class_names(tmp_path):
    path = str(tmp_path / "abc.tfrecord")
    # v3 has no label string (Model Garden form): not checked.
    writer.write_shard(path, [_named(k, f"v{k}", n) for k, n in enumerate("abc")]
                       + [_named(0, "v3", "")])
    kwargs = {"num_frames": 4, "num_clips": 1, "short_side": 24, "num_classes": 3}
    ids = [m.numpy()[0] for _, _, m in eval_dataset(path, class_names=["a", "b", "c"], **kwargs)]
    assert ids == [b"v0", b"v1", b"v2", b"v3"]
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        list(eval_dataset(path, class_names=["c", "b", "a"], **kwargs))
    line = _line(info.value)
    assert line.startswith("lgd_tf.data: bad record 0 of ") and "abc.tfrecord" in line, line
    assert "label 0 is 'c' in class_names but the record's `clip/label/string` is 'a'" in line
    counter = SkipCounter()
    kept = [m.numpy()[0] for _, _, m in eval_dataset(
        path, class_names=["c", "b", "a"], ignore_errors=True, skip_counter=counter, **kwargs)]
    assert kept == [b"v1", b"v3"] and counter.count == 2
    with pytest.raises(ValueError, match="class_names"):
        eval_dataset(path, class_names=["a", "b"], **kwargs)


def test_folders_and_files_that_are_no_tfrecords_are_refused(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    shard = helpers.write_records(data / "train-00000-of-00001.tfrecord",
                                  [(helpers.indexed_frames(4), 0, "v")])
    (data / "class_names.txt").write_text("abseiling\nbowling\n")
    (data / "empty.tfrecord").write_bytes(b"")  # an empty shard is a valid one
    assert len(list(eval_dataset(str(data / "*.tfrecord"), num_frames=4, num_clips=1,
                                 short_side=24))) == 1
    with pytest.raises(ValueError, match=r"class_names.txt is not a TFRecord file \(its first "
                                         r"record's length checksum does not match\); give a "
                                         r"glob of the TFRecord shards only"):
        train_dataset(str(data / "*"), 2)
    with pytest.raises(ValueError, match=r"data is a folder; give a glob"):
        eval_dataset(str(data))
    (data / "sub").mkdir()
    with pytest.raises(ValueError, match=r"sub is a folder"):
        eval_dataset(str(data / "s*"))
    # Damage after the first record's header is the pipeline's to report (by record).
    assert pipelines.tfrecord_problem(shard) is None


def test_the_commands_and_the_pipelines_refuse_a_pattern_with_one_check(tmp_path):
    """`reader.list_files` is the one pattern check: for each bad pattern the pipelines'
    ValueError and the commands' (`data_sources`, exit 2) name the same file and reason, in
    their own words; lines written out by hand."""
    from lgd_tf.data import reader
    from lgd_tf.training import two_stage
    from lgd_tf.training.errors import TrainingError

    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    helpers.write_records(data / "train-00000-of-00001.tfrecord",
                          [(helpers.indexed_frames(4), 0, "v")])
    (data / "class_names.txt").write_text("abseiling\nbowling\n")
    (data / "short.tfrecord").write_bytes(b"12345")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "train-0.tfrecord").write_bytes(b"")
    text, short, sub = data / "class_names.txt", data / "short.tfrecord", data / "sub"
    not_tfrecord = "is not a TFRecord file (its first record's length checksum does not match)"
    cases = [  # pattern, the pipelines' line (None: accepted), the commands' line
        (f"{data}/c*", f"lgd_tf.data: {text} {not_tfrecord}; give a glob of the TFRecord shards "
         f"only, e.g. '{data}/train-*'", f"the train data pattern '{data}/c*' matches {text}, "
         f"which {not_tfrecord}; give a glob of the TFRecord shards only, e.g. "
         f"'{data}/train-*'"),
        (f"{data}/sh*", f"lgd_tf.data: {short} is not a TFRecord file (5 bytes, shorter than a "
         f"record header); give a glob of the TFRecord shards only, e.g. '{data}/train-*'",
         f"the train data pattern '{data}/sh*' matches {short}, which is not a TFRecord file "
         f"(5 bytes, shorter than a record header); give a glob of the TFRecord shards only, "
         f"e.g. '{data}/train-*'"),
        (f"{data}/su*", f"lgd_tf.data: {sub} is a folder; give a glob of the TFRecord shards "
         f"only, e.g. '{sub}/train-*'", f"the train data pattern '{data}/su*' matches {sub}, "
         f"which is a folder; give a glob of the TFRecord shards only, e.g. '{data}/train-*'"),
        (f"{data}/none-*", f"No file matches `file_pattern`. Received: file_pattern="
         f"'{data}/none-*'", f"no file matches the train data pattern '{data}/none-*'"),
        (f"{tmp_path}/empty/*", None, f"the train data set is empty: the 1 file(s) matching "
         f"'{tmp_path}/empty/*' hold no record"),
    ]
    for pattern, pipeline_line, command_line in cases:
        if pipeline_line is None:
            assert reader.list_files(pattern) == [f"{tmp_path}/empty/train-0.tfrecord"]
        else:
            with pytest.raises(ValueError) as info:
                train_dataset(pattern, 2)
            assert str(info.value) == pipeline_line
        with pytest.raises(TrainingError) as info:
            two_stage.data_sources(pattern, num_classes=2, need_eval=False)
        assert str(info.value) == command_line
    # A folder given as the pattern itself: the commands name the pattern, the pipelines the
    # folder they matched.
    with pytest.raises(TrainingError, match=re.escape(
            f"the eval data pattern '{data}' is a folder; give a glob of its shards, e.g. "
            f"'{data}/eval-*'")):
        two_stage.data_sources(None, str(data), num_classes=2, need_train=False)
    with pytest.raises(ValueError, match=re.escape(f"lgd_tf.data: {data} is a folder")):
        eval_dataset(str(data))
