"""Scores along a video: a window slid over the whole video, streaming (`predict --timeline`).

`video_timeline(classifier, video)` decodes the video once (`predict.iter_model_frames`, the
decoder of predict and the TFRecord builder) and scores a window of `window` frames every
`window_stride` frames; memory holds one window of frames and one batch of windows, whatever
the video's length.

- LGD-3D: the window is one clip, `(num_frames - 1) * temporal_stride + 1` frames (the clip
  length), its frames every `temporal_stride`-th; the default stride is the clip length
  (windows side by side).
- LGD-2D: the window is `LGD2D_WINDOW` frames split into `num_segments` TSN segments, the
  middle frame of each.
- Windows start at 0, stride, 2 stride, ... while inside the video, plus one window ending at
  the last frame if the regular ones stop short of it; a video shorter than a window is one
  window (looped or padded as `short_video` says, as evaluation does).
- Frames are resized to the sampling's `short_side`; with `num_crops=3` a window's score is
  the mean over its 3 crops.

`write_timeline_csv` writes one row per window (start / end in seconds, top-k labels and
scores); `timeline_figure_png` draws the top classes' scores over time (matplotlib, the Agg
canvas, no pyplot state) with the video-level top-k (`predict_video`) in the title.
"""

import collections
import csv
import dataclasses
import io

import numpy as np

from lgd_tf.inference import predict as predict_lib

LGD2D_WINDOW = 16  # frames of an LGD-2D timeline window
DEFAULT_BATCH = 8  # windows scored per model call


@dataclasses.dataclass
class Timeline:
    """Window scores of one video.

    Attributes:
        video: the video path.
        class_names: K names.
        fps: frame rate used for the times (the container's average rate; 1.0 if unknown,
            then times are frame numbers).
        window, window_stride: in frames.
        starts, ends: frame index of each window's first frame, one past its last frame.
        probabilities: float32 `(num_windows, K)`.
        prediction: the video-level `predict.Prediction` (evaluation sampling), or None.
    """

    video: str
    class_names: list
    fps: float
    window: int
    window_stride: int
    starts: np.ndarray
    ends: np.ndarray
    probabilities: np.ndarray
    prediction: object = None

    @property
    def start_seconds(self):
        return self.starts / self.fps

    @property
    def end_seconds(self):
        return self.ends / self.fps

    def top_k(self, k):
        """Per window, a list of (index, label, score), best first."""
        order = np.argsort(-self.probabilities, axis=1, kind="stable")[:, :k]
        return [[(int(i), self.class_names[i], float(p[i])) for i in row]
                for row, p in zip(order, self.probabilities, strict=True)]

    def rows(self, k):
        """One dict per window: start_s, end_s, start_frame, end_frame, top-k labels, scores."""
        rows = []
        for start, end, top in zip(self.starts, self.ends, self.top_k(k), strict=True):
            row = {"start_s": round(float(start) / self.fps, 4),
                   "end_s": round(float(end) / self.fps, 4),
                   "start_frame": int(start), "end_frame": int(end)}
            for rank, (_, label, score) in enumerate(top, start=1):
                row[f"label_{rank}"] = label
                row[f"score_{rank}"] = round(score, 6)
            rows.append(row)
        return rows


def window_indices(sampling, window=None):
    """(window length in frames, int64 indices into the window of its T frames)."""
    from lgd_tf.data import sampling as sampling_lib

    if sampling.model == "3d":
        span = (sampling.num_frames - 1) * sampling.temporal_stride + 1
        window = span if window is None else int(window)
        if window < span:
            raise ValueError(f"A 3D window holds a clip of {span} frames. Received: {window}")
        local = np.arange(sampling.num_frames) * sampling.temporal_stride
        return window, local
    window = LGD2D_WINDOW if window is None else int(window)
    if window < sampling.num_segments:
        raise ValueError(f"A 2D window needs >= num_segments ({sampling.num_segments}) "
                         f"frames. Received: {window}")
    offsets = np.full([sampling.num_segments], 0.5, np.float32)
    local = sampling_lib.tsn_indices(window, sampling.num_segments, offsets).numpy()
    return window, local.astype(np.int64)


def video_timeline(classifier, video, *, window_stride=None, window=None,
                   batch_size=DEFAULT_BATCH, with_prediction=True):
    """Scores windows slid over a video (see the module docstring).

    Args:
        classifier: a loaded `VideoClassifier` (see `classifier.load_classifier`).
        video: path of the video file.
        window_stride: frames between window starts (default: the window length).
        window: window length in frames (default: the clip length for 3D, `LGD2D_WINDOW`
            for 2D).
        batch_size: windows per model call.
        with_prediction: also score the whole video as `predict_video` does.

    Returns:
        A `Timeline`.
    """
    from lgd_tf.data import sampling as sampling_lib
    from lgd_tf.data.video import video_frame_rate

    sampling = classifier.sampling
    window, local = window_indices(sampling, window)
    stride = window if window_stride is None else int(window_stride)
    if stride < 1:
        raise ValueError(f"`window_stride` must be >= 1. Received: {window_stride}")
    if int(batch_size) < 1:
        raise ValueError(f"`batch_size` must be >= 1. Received: {batch_size}")

    buffer = collections.deque(maxlen=window)  # the last `window` frames
    batch, starts, scores = [], [], []

    def flush():
        if batch:
            clips = np.stack(batch)  # (B, T, H, W, C)
            if sampling.num_crops == 3:
                clips = sampling_lib.three_crops(clips).numpy()
            per_view = classifier.view_probabilities(clips)
            per_window = per_view.reshape(len(batch), sampling.num_crops, -1).mean(axis=1)
            scores.extend(per_window.astype(np.float32))
            batch.clear()

    def add(start, frames):
        starts.append(start)
        batch.append(frames)
        if len(batch) >= batch_size:
            flush()

    count = 0
    for index, frame in predict_lib.iter_model_frames(video, classifier.input_channels,
                                                      sampling.short_side):
        buffer.append(frame)
        count = index + 1
        start = index - window + 1
        if start >= 0 and start % stride == 0:
            add(start, np.stack([buffer[i] for i in local]))
    if count < window:  # shorter than a window: one window, looped or padded
        indices = sampling_lib.eval_indices(
            count, model=sampling.model, num_frames=sampling.num_frames,
            temporal_stride=sampling.temporal_stride, num_segments=sampling.num_segments,
            num_clips=1, short_video=sampling.short_video).numpy()[0]
        add(0, np.stack([buffer[i] for i in indices]))
    elif (count - window) % stride:  # one more window, ending at the last frame
        add(count - window, np.stack([buffer[i] for i in local]))
    flush()
    starts = np.array(starts, np.int64)
    fps = video_frame_rate(video) or 1.0
    prediction = predict_lib.predict_video(classifier, video) if with_prediction else None
    return Timeline(video=str(video), class_names=list(classifier.class_names), fps=float(fps),
                    window=window, window_stride=stride, starts=starts,
                    ends=np.minimum(starts + window, max(count, 1)),
                    probabilities=np.stack(scores), prediction=prediction)


def write_timeline_csv(timeline, path, k=5):
    """One row per window: start_s, end_s, start_frame, end_frame, label_1, score_1, ..."""
    k = min(int(k), len(timeline.class_names))
    fields = ["start_s", "end_s", "start_frame", "end_frame"]
    for rank in range(1, k + 1):
        fields += [f"label_{rank}", f"score_{rank}"]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(timeline.rows(k))
    return path


def top_classes(timeline, max_classes=6):
    """Classes worth drawing: each window's top class, then the highest peak scores."""
    peaks = timeline.probabilities.max(axis=0)
    winners = set(np.argmax(timeline.probabilities, axis=1).tolist())
    order = sorted(range(len(peaks)), key=lambda c: (c not in winners, -peaks[c]))
    return order[:max(1, min(max_classes, len(order)))]


def timeline_figure_png(timeline, path=None, *, k=5, max_classes=6, title=None):
    """Draws the timeline: time in seconds on x, the top classes' scores as lines (each
    window's score drawn over its span), the top-1 class of each window as a colour strip, and
    the video-level top-k (if `timeline.prediction`) in the title.

    Returns the PNG bytes; also writes them to `path` if given.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    classes = top_classes(timeline, max_classes)
    colours = {c: f"C{i % 10}" for i, c in enumerate(classes)}
    figure = Figure(figsize=(9, 4.2), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(2, 1, height_ratios=[10, 1])
    axes = figure.add_subplot(grid[0])
    strip = figure.add_subplot(grid[1], sharex=axes)
    begin, end = timeline.start_seconds, timeline.end_seconds
    centres = (begin + end) / 2
    # Step lines through the window centres: a score holds from one window to the next.
    for c in classes:
        axes.step(centres, timeline.probabilities[:, c], where="mid", color=colours[c],
                  linewidth=1.8, label=timeline.class_names[c])
        axes.plot(centres, timeline.probabilities[:, c], "o", color=colours[c], markersize=3)
    axes.set_ylim(-0.02, 1.02)
    axes.set_ylabel("score (window)")
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False,
                title="class")
    axes.tick_params(labelbottom=False)
    best = np.argmax(timeline.probabilities, axis=1)
    for b, e, c in zip(begin, end, best, strict=True):
        strip.axvspan(b, e, color=colours.get(int(c), "0.7"), linewidth=0)
    strip.set_yticks([])
    strip.set_ylabel("top 1", rotation=0, ha="right", va="center", fontsize=9)
    seconds = "s" if timeline.fps != 1.0 else "frames"
    strip.set_xlabel(f"time ({seconds}); window {timeline.window} frames, stride "
                     f"{timeline.window_stride}")
    strip.set_xlim(float(begin.min()), float(end.max()))
    if title is None:
        title = str(timeline.video).rsplit("/", 1)[-1]
        if timeline.prediction is not None:
            top = timeline.prediction.top_k(min(k, 3))
            title += "  |  video: " + ", ".join(f"{label} {score:.2f}" for _, label, score in top)
    axes.set_title(title, fontsize=10, loc="left")
    out = io.BytesIO()
    figure.savefig(out, format="png")
    data = out.getvalue()
    if path is not None:
        with open(path, "wb") as f:
            f.write(data)
    return data


def timeline_paths(prefix):
    """(PREFIX.csv, PREFIX.png)."""
    return str(prefix) + ".csv", str(prefix) + ".png"


def write_timeline(timeline, prefix, k=5, flag="--timeline"):
    """PREFIX.csv and PREFIX.png, replaced together once both are written (a failure keeps
    both old files); returns their paths."""
    from lgd_io import files

    csv_path, png_path = timeline_paths(prefix)
    with files.staged(flag) as write:
        write(csv_path, lambda tmp: write_timeline_csv(timeline, tmp, k))
        write(png_path, lambda tmp: timeline_figure_png(timeline, tmp, k=k))
    return csv_path, png_path
