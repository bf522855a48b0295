"""The errors a user can act on (`lgd_io.errors`, shared with the TF-free data build).

`BadInput` (historically `TrainingError`): exit 2. `RunFailure`: exit 1. Anything else is a
bug and keeps its traceback. `warn` prints a problem that does not stop the run as one line.
"""

from lgd_io.errors import *  # noqa: F403 (the same classes under their old home)
