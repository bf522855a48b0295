"""Regenerates docs/images/timeline_example.png, the `predict --timeline` figure of the README.

    python docs/make_timeline_example.py [--output=docs/images/timeline_example.png]

A tiny LGD-3D (4-frame clips) is trained for a few seconds on CPU to tell three kinds of
clips apart: "dark" and "bright" grey noise and "red" noise. A 12 s video at 8 fps is made of
segments of the three (dark, bright, red, dark, bright), and `lgd_tf.inference.timeline` scores
a 4-frame window every 2 frames; the figure shows each class's score over time, each window's
top class as a strip, and the video-level top-3 (15-clip evaluation sampling) in the title.
"""

import argparse
import os
import pathlib
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

CLASS_NAMES = ["dark", "bright", "red"]
NUM_FRAMES = 4
SIZE = 32
FPS = 8
SEGMENTS = ((0, 20), (1, 18), (2, 26), (0, 14), (1, 18))  # (label, frames)


def clips_of(rng, labels, num_frames=NUM_FRAMES, size=(SIZE, SIZE)):
    """Noise (+-12) around a level: dark 20-100, bright 150-230, red = dark with a red
    channel at 150-230."""
    labels = np.asarray(labels)
    dark = 20 + rng.integers(0, 81, len(labels))
    bright = 150 + rng.integers(0, 81, len(labels))
    level = np.stack([np.where(labels == 0, dark, bright)] * 3, axis=-1)
    level[labels == 2, 1:] = dark[labels == 2, None]
    noise = rng.integers(-12, 13, (len(labels), num_frames, *size, 3))
    return np.clip(level[:, None, None, None, :] + noise, 0, 255).astype(np.uint8)


def train_model(rng):
    import keras

    import lgd_tf

    keras.utils.set_random_seed(0)
    model = lgd_tf.models.lgd3d(num_classes=3, stage_blocks=(1, 1, 1, 1), base_filters=8,
                                num_frames=NUM_FRAMES, sketch_dim=64)
    labels = rng.integers(0, 3, 96)
    clips = clips_of(rng, labels).astype("float32")
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss={"combined": keras.losses.SparseCategoricalCrossentropy(from_logits=True)})
    model.fit(clips, {"combined": labels.astype("int32")}, batch_size=8, epochs=4, verbose=0)
    # BN statistics of the training clips (momentum 0 for one batch), as after a long run.
    layers = [layer for layer in model._flatten_layers()
              if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in layers:
        layer.momentum, saved = 0.0, layer.momentum
        layer._saved_momentum = saved
    model(clips, training=True)
    for layer in layers:
        layer.momentum = layer._saved_momentum
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=str(pathlib.Path(__file__).parent / "images" /
                                                "timeline_example.png"))
    args = parser.parse_args()

    from lgd_tf.data import video as video_lib
    from lgd_tf.inference import classifier, timeline

    rng = np.random.default_rng(0)
    model = train_model(rng)
    with tempfile.TemporaryDirectory() as tmp:
        folder = pathlib.Path(tmp)
        model.save(folder / "model.keras")
        (folder / "class_names.txt").write_text("\n".join(CLASS_NAMES) + "\n")
        parts = []
        for label, length in SEGMENTS:
            clips = clips_of(rng, [label] * -(-length // NUM_FRAMES), size=(48, 64))
            parts.append(clips.reshape(-1, 48, 64, 3)[:length])
        video = folder / "dark_bright_red.mp4"
        video_lib.write_frames(video, np.concatenate(parts), codec="mpeg4", fps=FPS)
        clf = classifier.load_classifier(folder / "model.keras", short_side=SIZE)
        result = timeline.video_timeline(clf, video, window_stride=2)
        png = timeline.timeline_figure_png(result, args.output, k=3)
    bounds = np.cumsum([length for _, length in SEGMENTS])[:-1] / FPS
    print(f"{args.output}: {len(png) / 1024:.0f} KB, {len(result.starts)} windows; true "
          f"boundaries at {', '.join(f'{b:g}' for b in bounds)} s")


if __name__ == "__main__":
    main()
