"""`python -m lgd_tf.train --gin_file=...`: two-stage training of LGD networks (Sec. 4.3)."""

import sys

NOT_READY = (
    "lgd_tf.train: the training entry point is not available in this version yet "
    "(see the README's status section)."
)


def run(argv=None):
    """Entry point; returns the process exit code."""
    del argv
    print(NOT_READY, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(run(sys.argv))
