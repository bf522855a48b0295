"""The errors a user can act on (`lgd_io.errors`, shared with the TF-free data build).

`BadInput` (historically `TrainingError`): exit 2. `RunFailure`: exit 1. Anything else is a
bug and keeps its traceback. `warn` prints a problem that does not stop the run as one line.
`data_error` finds the input pipeline's own message in a TensorFlow error.
"""

import re

from lgd_io.errors import *  # noqa: F403 (the same classes under their old home)
from lgd_io.errors import one_line


def data_error(error):
    """The input pipeline's "lgd_tf.data: ..." line (a bad record, named) inside a
    TensorFlow error raised while reading the data, or None (not a data error: a bug)."""
    found = re.search(r"(lgd_tf\.data: .*?)\]?\s*$", one_line(error))
    return found.group(1).replace("\\'", "'") if found else None
