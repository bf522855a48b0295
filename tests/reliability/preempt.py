"""`python -m tests.reliability.preempt <lgd_tf.train flags>`: the train command with a SIGKILL
planted at one exact point of a checkpoint or model write (for test_preemption).

LGD_KILL_AT selects the point (the process kills itself with SIGKILL there):
    merge:STAGE:STEP    checkpoint STEP of STAGE written to its `_temp` folder, not merged yet
    record:STAGE:STEP   checkpoint STEP complete on disk, the `checkpoint` state file not updated
    rename:NAME         a model file (e.g. stage1.keras) fully written to its temporary name,
                        not renamed yet
"""

import os
import runpy
import signal
import sys


def _die(what):
    print(f"preempt: SIGKILL at {what}", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def install(spec):
    from tensorflow.python.checkpoint import checkpoint_management
    from tensorflow.python.ops import gen_io_ops

    kind, _, where = spec.partition(":")
    if kind == "merge":
        stage, step = where.split(":")
        merge = gen_io_ops.merge_v2_checkpoints

        def merge_then_maybe_die(checkpoint_prefixes, destination_prefix, *args, **kwargs):
            prefix = os.fspath(destination_prefix.numpy().decode()
                               if hasattr(destination_prefix, "numpy") else destination_prefix)
            if prefix.endswith(os.path.join(stage, f"ckpt-{step}")):
                _die(f"{prefix} (shards in {prefix}_temp, not merged)")
            return merge(checkpoint_prefixes, destination_prefix, *args, **kwargs)

        gen_io_ops.merge_v2_checkpoints = merge_then_maybe_die
    elif kind == "record":
        stage, step = where.split(":")
        record = checkpoint_management.CheckpointManager._record_state

        def record_or_die(self):
            latest = self._latest_checkpoint or ""
            if latest.endswith(os.path.join(stage, f"ckpt-{step}")):
                _die(f"{latest} (complete, checkpoint state not updated)")
            return record(self)

        checkpoint_management.CheckpointManager._record_state = record_or_die
    elif kind == "rename":
        from lgd_io import files

        replace = files.replace

        def replace_or_die(src, dst):
            if os.path.basename(os.fspath(dst)) == where:
                _die(f"{dst} (written to {src}, not renamed)")
            return replace(src, dst)

        files.replace = replace_or_die
    else:
        raise ValueError(f"LGD_KILL_AT must be merge:, record: or rename:. Received: {spec}")


if __name__ == "__main__":
    if os.environ.get("LGD_KILL_AT"):
        install(os.environ["LGD_KILL_AT"])
    sys.argv[0] = "lgd_tf.train"
    runpy.run_module("lgd_tf.train", run_name="__main__", alter_sys=True)
