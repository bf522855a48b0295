"""One-line errors: the meaningful line of TensorFlow and gin messages."""

from lgd_tf.training.errors import Interrupted, RunFailure, TrainingError, one_line


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
    assert TrainingError("x").exit_code == 2
    assert RunFailure("x").exit_code == 1 and isinstance(RunFailure("x"), TrainingError)
    assert Interrupted("x").exit_code == 1
