"""One-line errors: the meaningful line of TensorFlow and gin messages."""

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
