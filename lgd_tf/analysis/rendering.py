"""Rendering of an explanation (`explain.Explanation`): heat-map overlays, MP4 / GIF videos
and the figure grid.
"""

import math
import pathlib

import numpy as np

from lgd_tf.analysis.grad_cam import METHOD_NAMES

VIDEO_SUFFIXES = {".mp4": "mp4", ".gif": "gif"}
MP4_CODECS = ("libx264", "h264", "mpeg4", "libopenh264")
DEFAULT_COLORMAP = "jet"


def colorize(heatmaps, colormap=DEFAULT_COLORMAP):
    """(..., H, W) in [0, 1] -> uint8 RGB (..., H, W, 3) through a matplotlib colormap."""
    import matplotlib

    cmap = matplotlib.colormaps[colormap]
    return (cmap(np.clip(heatmaps, 0.0, 1.0))[..., :3] * 255.0 + 0.5).astype(np.uint8)


def overlay(frames, heatmaps, *, alpha=0.45, colormap=DEFAULT_COLORMAP):
    """The frames with the coloured heatmaps blended over them, uint8 (N, H, W, 3)."""
    frames = np.asarray(frames, np.float32)
    colours = colorize(heatmaps, colormap).astype(np.float32)
    return np.clip((1.0 - alpha) * frames + alpha * colours + 0.5, 0, 255).astype(np.uint8)


def _upscale(images, min_side):
    import cv2

    height, width = images.shape[1:3]
    factor = max(1, math.ceil(min_side / min(height, width)))
    new_h, new_w = height * factor, width * factor
    new_h, new_w = new_h + new_h % 2, new_w + new_w % 2  # even sizes for yuv420p
    if (new_h, new_w) == (height, width):
        return images
    interpolation = cv2.INTER_NEAREST if factor > 1 else cv2.INTER_LINEAR
    return np.stack([cv2.resize(image, (new_w, new_h), interpolation=interpolation)
                     for image in images])


def label(explanation):
    return f"{explanation.class_name} p={explanation.score:.2f}"


def _put_label(image, text):
    """Writes `text` on a dark band at the top of `image` (in place); returns it."""
    import cv2

    height, width = image.shape[:2]
    scale = max(0.35, min(width, height) / 400.0)
    thickness = max(1, int(round(scale * 1.5)))
    (text_w, text_h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    if text_w > width - 4:  # shrink to fit the width
        scale *= (width - 4) / text_w
        (text_w, text_h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale,
                                                 thickness)
    band = text_h + base + 6
    image[:band] = (image[:band].astype(np.float32) * 0.35).astype(np.uint8)
    cv2.putText(image, text, (3, 3 + text_h), cv2.FONT_HERSHEY_SIMPLEX, scale,
                (255, 255, 255), thickness, cv2.LINE_AA)
    return image


def overlay_frames(explanation, *, min_side=256, alpha=0.45, colormap=DEFAULT_COLORMAP):
    """The frames of the overlay video, uint8 (N, H', W', 3): heatmap blended, upscaled by a
    whole factor so the shorter side is >= `min_side` (even sizes), class and score written."""
    blended = overlay(explanation.frames, explanation.heatmaps, alpha=alpha, colormap=colormap)
    big = np.ascontiguousarray(_upscale(blended, min_side))
    text = label(explanation)
    return np.stack([_put_label(image.copy(), text) for image in big])


def pick_mp4_codec():
    """The first MP4 video encoder PyAV has here (libx264, h264, mpeg4, libopenh264)."""
    import av

    for codec in MP4_CODECS:
        if codec in av.codecs_available:
            try:
                av.codec.Codec(codec, "w")
            except Exception:  # noqa: BLE001  (listed but no encoder)
                continue
            return codec
    return None


def video_path(output):
    """The overlay video written for `output`: itself, or a .gif beside an .mp4 when PyAV
    has no MP4 encoder here."""
    path = pathlib.Path(output)
    kind = VIDEO_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise ValueError(f"The output must end with .mp4 or .gif. Received: {path}")
    if kind == "mp4" and pick_mp4_codec() is None:
        return path.with_suffix(".gif")
    return path


def encode_video(path, frames, *, fps=8.0, kind=None):
    """Encodes uint8 RGB frames (N, H, W, 3) at `path` (mp4 with PyAV, gif with Pillow; the
    format is `kind`, default the suffix's)."""
    kind = kind or VIDEO_SUFFIXES[pathlib.Path(path).suffix.lower()]
    if kind == "gif":
        from PIL import Image

        images = [Image.fromarray(frame) for frame in frames]
        images[0].save(path, format="GIF", save_all=True, append_images=images[1:],
                       duration=int(round(1000.0 / fps)), loop=0)
        return
    from fractions import Fraction

    from lgd_tf.data.video import write_frames

    codec = pick_mp4_codec()
    write_frames(path, frames, codec=codec, fps=Fraction(fps).limit_denominator(1000),
                 container_format="mp4",
                 options={"crf": "20"} if codec in ("libx264", "h264") else None)


def write_video(path, frames, *, fps=8.0):
    """Writes uint8 RGB frames (N, H, W, 3) to `path` (.mp4 with PyAV, .gif with Pillow),
    whole or not at all.

    Returns the path written (an .mp4 falls back to a .gif next to it when PyAV has no MP4
    encoder here).
    """
    from lgd_io import files

    path = video_path(path)
    kind = VIDEO_SUFFIXES[path.suffix.lower()]
    files.atomic_write(path, lambda tmp: encode_video(tmp, frames, fps=fps, kind=kind))
    return path


def grid_figure(explanation, *, num_frames=6, alpha=0.45, colormap=DEFAULT_COLORMAP,
                title=None, column_width=1.6):
    """A matplotlib Figure: `num_frames` frames evenly spread over the video (top row) and
    their Grad-CAM overlays (bottom row), with a colour bar. No pyplot state is touched."""
    from matplotlib.figure import Figure

    n = len(explanation.frames)
    picks = np.unique(np.linspace(0, n - 1, min(num_frames, n)).round().astype(int))
    blended = overlay(explanation.frames[picks], explanation.heatmaps[picks], alpha=alpha,
                      colormap=colormap)
    figure = Figure(figsize=(column_width * len(picks) + 0.9, 2 * column_width + 0.7),
                    dpi=100, layout="constrained")
    axes = figure.subplots(2, len(picks), squeeze=False)
    for column, frame_index in enumerate(picks):
        axes[0, column].imshow(explanation.frames[frame_index], interpolation="nearest")
        axes[0, column].set_title(f"frame {frame_index}", fontsize=8)
        image = axes[1, column].imshow(blended[column], interpolation="nearest")
        for row in (0, 1):
            axes[row, column].set_xticks([])
            axes[row, column].set_yticks([])
    axes[0, 0].set_ylabel("frame", fontsize=8)
    axes[1, 0].set_ylabel(METHOD_NAMES[explanation.method], fontsize=8)
    del image
    import matplotlib

    mappable = matplotlib.cm.ScalarMappable(cmap=matplotlib.colormaps[colormap])
    mappable.set_clim(0.0, 1.0)
    figure.colorbar(mappable, ax=axes[1, :].tolist(), shrink=0.9, pad=0.01, label="")
    figure.suptitle(title or f"{METHOD_NAMES[explanation.method]} on "
                    f"{layer_text(explanation.layer)}: "
                    f"{explanation.class_name} (p={explanation.score:.2f})", fontsize=9)
    return figure


def layer_text(layer):
    return "x_L" if layer == "local" else layer


def save_grid(path, explanation, **kwargs):
    """Saves `grid_figure(explanation, **kwargs)` as a PNG at `path` (no temporary name)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    figure = grid_figure(explanation, **kwargs)
    FigureCanvasAgg(figure)
    figure.savefig(path, format="png")


def write_grid(path, explanation, **kwargs):
    """Saves `grid_figure(explanation, **kwargs)` as a PNG at `path`, whole or not at all;
    returns the path."""
    from lgd_io import files

    files.atomic_write(path, lambda tmp: save_grid(tmp, explanation, **kwargs))
    return pathlib.Path(path)


def output_paths(output):
    """(overlay video, PNG grid) written for `--output`."""
    output = pathlib.Path(output)
    return video_path(output), output.with_suffix(".png")


def write_explanation(explanation, output, *, fps=8.0, min_side=256, grid_frames=6,
                      alpha=0.45, colormap=DEFAULT_COLORMAP, flag="--output"):
    """Writes the overlay video at `output` (.mp4 or .gif) and the PNG grid next to it
    (same name, .png), replaced together once both are complete (a failure keeps both old
    files). Returns `(video_path, png_path)`."""
    from lgd_io import files

    video, png = output_paths(output)
    frames = overlay_frames(explanation, min_side=min_side, alpha=alpha, colormap=colormap)
    kind = VIDEO_SUFFIXES[video.suffix.lower()]
    with files.staged(flag) as write:
        write(video, lambda tmp: encode_video(tmp, frames, fps=fps, kind=kind))
        write(png, lambda tmp: save_grid(tmp, explanation, num_frames=grid_frames,
                                         alpha=alpha, colormap=colormap))
    return video, png
