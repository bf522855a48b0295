"""The settings of one stage of the two-stage fit (Sec. 4.3), checked once."""

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from lgd_tf.training.errors import TrainingError


@dataclasses.dataclass(frozen=True)
class StageConfig:
    """What `loop.run_stage` trains: the stage, its data and its schedule.

    The gin names are those of `lgd_tf.training.fit_stage.<field>` (`loop.fit_stage` takes
    the same keywords and builds this). Invalid settings raise `TrainingError` when the config
    is made; `train_steps` is then always the resolved number of steps.

    Attributes:
        stage: "stage1" or "stage2" (names the logs).
        train_pattern: TFRecord glob for `data_fn`.
        stage_dir: checkpoints and TensorBoard logs (`stage_dir/train`, `stage_dir/eval`).
        num_classes: K (labels are checked against it by the input pipeline).
        train_steps: total optimizer steps of the stage; or give `epochs` and
            `steps_per_epoch` (train_steps = epochs x steps_per_epoch, rounded; the paper's
            schedule, Sec. 5.2, is in epochs).
        batch_size: global batch, split evenly over the replicas.
        optimizer: a Keras optimizer or a factory (gin: `@keras.optimizers.SGD`); built in
            the strategy's scope. Default SGD(0.01, momentum 0.9): the learning rate is
            Sec. 5.2's; the paper states no momentum (0.9 is the ResNet value, He et al.).
        weight_decay: L2 factor on every kernel (0 switches it off; the default 1e-4 is the
            ResNet value, not stated in the paper).
        checkpoint_every_steps, max_checkpoints: checkpoint frequency and how many are kept.
        log_every_steps: progress line and TensorBoard summaries.
        jit_compile: XLA for the train step (off for MirroredStrategy over CPU devices).
        data_fn: `fn(pattern, batch_size, input_context=..., seed=..., num_classes=...)`,
            default `lgd_tf.data.train_dataset`.
        seed: seed of the input pipeline.
        checkpoint_input_pipeline: also checkpoint the input iterator (same data order after
            a resume; its state holds the shuffle buffer, so keep it off for big data).
        eval_every_steps: run the evaluation every this many steps (None: never).
        class_names: passed to `data_fn` (label strings checked) unless None.
        precise_bn_batches: N > 0: once the stage has reached `train_steps` (also when it
            was already there), every BatchNorm's moving statistics are recomputed over the
            first N global batches of a fresh `data_fn` pipeline (same settings and seed),
            as PySlowFast's precise BN (`precise_bn.recompute_batch_norm_statistics`). The
            checkpoints keep the moving statistics; the model returned (and saved as the
            stage's .keras) has the precise ones. 0: off.
    """

    stage: str
    train_pattern: str
    stage_dir: str
    num_classes: int
    train_steps: int | None = None
    epochs: float | None = None
    steps_per_epoch: int | None = None
    batch_size: int = 64
    optimizer: Any = None
    weight_decay: float = 1e-4
    checkpoint_every_steps: int = 500
    max_checkpoints: int = 3
    log_every_steps: int = 20
    jit_compile: bool = False
    data_fn: Callable | None = None
    seed: int = 0
    checkpoint_input_pipeline: bool = False
    eval_every_steps: int | None = None
    class_names: Sequence[str] | None = None
    precise_bn_batches: int = 0

    def __post_init__(self):
        stage, train_steps = self.stage, self.train_steps
        if train_steps is None:
            if self.epochs is None or self.steps_per_epoch is None:
                raise TrainingError(f"{stage}: set fit_stage.train_steps, or fit_stage.epochs "
                                    "and fit_stage.steps_per_epoch")
            train_steps = round(float(self.epochs) * int(self.steps_per_epoch))
        object.__setattr__(self, "train_steps", int(train_steps))
        if self.train_steps < 0:
            raise TrainingError(f"{stage}: train_steps must be >= 0. Received: "
                                f"{self.train_steps}")
        if self.eval_every_steps is not None and int(self.eval_every_steps) < 1:
            raise TrainingError(f"{stage}: fit_stage.eval_every_steps must be >= 1 or None. "
                                f"Received: {self.eval_every_steps}")
        if int(self.precise_bn_batches) < 0:
            raise TrainingError(f"{stage}: fit_stage.precise_bn_batches must be >= 0. "
                                f"Received: {self.precise_bn_batches}")
