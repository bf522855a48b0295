"""Where a Grad-CAM map peaks on a demo video: inside the moving digit's box or not (the measure
`test_explain.py` asserts and `docs/make_figures.py` plots)."""

import numpy as np

from lgd_tf.data import demo


def peak_in_digit_box(peaks, mask, motion, start, frames_per_step=1):
    """Per frame: is the heatmap's peak (row, col) inside the digit's bounding box? The sprite
    wraps around the frame edges, so positions are compared modulo the frame size.

    frames_per_step: with k > 1 the box of frame t is the union of the digit's boxes over the
    k frames of its step (frames k * (t // k) .. k * (t // k) + k - 1): the frames one time
    step of the explained map stands for (`Explanation.frames_per_step`; the views of a demo
    video start at multiples of k). The map has one slice for those frames, so where the digit
    is within them it cannot say; 1 (the default) is the frame's own box.
    """
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    dy, dx = demo.MOTIONS[motion]
    k = max(1, int(frames_per_step))
    hits = []
    for t, (row, col) in enumerate(peaks):
        first = k * (t // k)
        steps = range(first, min(first + k, len(peaks)))
        hits.append(any(
            rows[0] <= (row - start[0] - dy * demo.SPEED * u) % demo.FRAME_SIZE <= rows[-1]
            and cols[0] <= (col - start[1] - dx * demo.SPEED * u) % demo.FRAME_SIZE <= cols[-1]
            for u in steps))
    return np.array(hits)
