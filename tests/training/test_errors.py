"""One-line errors: the meaningful line of TensorFlow and gin messages."""

import pytest

from lgd_tf.training.errors import (
    BadInput,
    Interrupted,
    LgdError,
    RunFailure,
    TrainingError,
    one_line,
)


def test_an_assertion_inside_a_tf_data_function_is_its_message():
    message = ("Error in user-defined function passed to MapDataset:13 transformation with "
               "iterator: Iterator::Root::Map: assertion failed: [lgd_tf.data: bad record 3 of "
               "/d/train-00001-of-00002.tfrecord (media_id \\'v7\\'): label 7 >= num_classes 2]"
               "\n\t [[{{node Assert}}]] [Op:IteratorGetNext]")
    assert one_line(message) == ("lgd_tf.data: bad record 3 of /d/train-00001-of-00002.tfrecord "
                                 "(media_id 'v7'): label 7 >= num_classes 2")


def test_the_first_line_that_is_not_tensorflow_context():
    message = "Graph execution error:\n\nDetected at node x\nthe real reason\n  File \"a.py\""
    assert one_line(message) == "the real reason"


def test_exit_codes_of_the_error_kinds():
    assert TrainingError is BadInput and BadInput("x").exit_code == 2
    # A run-time failure is not bad input: the command must not print it as exit 2.
    assert RunFailure("x").exit_code == 1 and not isinstance(RunFailure("x"), BadInput)
    assert Interrupted("x").exit_code == 1 and isinstance(Interrupted("x"), RunFailure)
    assert all(issubclass(kind, LgdError) for kind in (BadInput, RunFailure, Interrupted))


def _command(error):
    from lgd_tf.cli.command import Command

    def main(flag_values):
        del flag_values
        raise error

    return Command("lgd_tf.test", "usage", lambda fv: None, main)


def test_the_command_layer_maps_the_projects_errors_and_lets_bugs_through(capsys):
    """BadInput exit 2, RunFailure exit 1 (one line each); a ValueError or a TensorFlow
    InvalidArgumentError raised anywhere else is a bug: it keeps its traceback (before: exit
    2 and one line, as if the user had given bad input)."""
    import tensorflow as tf

    for error, code in ((TrainingError("bad flag"), 2), (RunFailure("disk gone"), 1)):
        assert _command(error).run(["lgd_tf.test"]) == code
        assert capsys.readouterr().err == f"lgd_tf.test: error: {error}\n"
    for error in (ValueError("a bug"), KeyError("a bug"),
                  tf.errors.InvalidArgumentError(None, None, "a bug"),
                  FileNotFoundError(2, "No such file or directory", "/x")):
        with pytest.raises(type(error)):
            _command(error).run(["lgd_tf.test"])


def test_tensorflows_remapper_line_is_dropped_from_stderr(capfd):
    """Grappler's line, written by the C++ runtime straight to file descriptor 2 while the
    command runs; every other line passes, in order."""
    import os

    from lgd_tf.cli.command import filtered_stderr

    line = (b"E0000 00:00:1796427374.556800   19756 meta_optimizer.cc:967] remapper failed: "
            b"INVALID_ARGUMENT: Mutation::Apply error: fanout 'gradient_tape/lgd3d_1/"
            b"backbone_1/conv1_spatial_1/convolution/ShapeN' exist for missing node "
            b"'lgd3d_1/backbone_1/conv1_pad_1/Pad'.\n")
    with filtered_stderr():
        os.write(2, b"first\n" + line + b"E0000 other.cc:1] remapper failed: kept\n")
        os.write(2, b"last, without a newline")
    assert capfd.readouterr().err == ("first\nE0000 other.cc:1] remapper failed: kept\n"
                                      "last, without a newline")
