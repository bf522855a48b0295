"""Learning-rate schedules of the paper (Sec. 5.2) as Keras 3 schedules (batch scaling ours)."""

import keras


def paper_step_decay(base_learning_rate=0.01, *, steps_per_epoch, decay_epochs=20,
                     decay_rate=0.1, num_epochs=50, global_batch_size=None,
                     reference_batch_size=None):
    """Sec. 5.2: "the initial learning rate is set as 0.01, which is divided by 10 after every
    20 epochs. The training is stopped after 50 epochs."

    Linear scaling (ours; the paper states none, this is Goyal et al. 2017's rule): with both
    `global_batch_size` and `reference_batch_size` (the paper's batch, which its rate 0.01 is
    for: 64 clips for LGD-3D, 128 frame triples for LGD-2D), every rate is multiplied by
    `global_batch_size / reference_batch_size`; at the paper's batch the factor is 1.

    Returns:
        `keras.optimizers.schedules.PiecewiseConstantDecay` over optimizer steps (or the
        constant rate when no decay falls inside `num_epochs`).
    """
    if int(steps_per_epoch) < 1 or int(decay_epochs) < 1:
        raise ValueError(f"`steps_per_epoch` and `decay_epochs` must be >= 1. Received: "
                         f"{steps_per_epoch}, {decay_epochs}")
    scale = 1.0
    if global_batch_size and reference_batch_size:
        scale = float(global_batch_size) / float(reference_batch_size)
    boundaries, values = [], [base_learning_rate * scale]
    epoch = decay_epochs
    while epoch < num_epochs:
        boundaries.append(int(epoch * steps_per_epoch))
        values.append(values[-1] * decay_rate)
        epoch += decay_epochs
    if not boundaries:
        return float(values[0])
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
