r"""Figures of the README made from the demo videos.

    python docs/make_figures.py gradcam [--model=runs/demo] [--output=PATH.png] \
        [--layer=res2] [--method=gradcam++]

gradcam: a class-activation frame grid (lgd_tf.analysis.explain) of one held-out demo video: six
frames of a moving digit (top) and the Grad-CAM++ of the map after res2 for the video's class
(bottom; --layer and --method choose another map or Grad-CAM). With --model (a model_dir or
.keras file trained on the demo set, e.g. by `python -m lgd_tf.train --gin_file=gin/demo.gin`)
that model is explained; without it a small
stage-1 LGD-3D (8 base filters, one unit per stage, 8 frames of 64 x 64) is trained here on
demo videos for --steps Adam steps (400: a few minutes on 2 CPU cores). It prints the fraction
of frames of 24 held-out videos whose heatmap peak falls inside the digit's box (the frame's
own box, and the union of the digit's boxes over the frames of the map's time step), for every
map (x_L, res4, res3, res2) with Grad-CAM and with Grad-CAM++.
"""

import argparse
import os
import pathlib
import sys

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the repository: the tests' demo model and Grad-CAM measure
GRADCAM_PNG = HERE / "images" / "gradcam_example.png"


def train_demo_model(steps=400, base_filters=8, batch_size=16, learning_rate=3e-3, seed=0):
    """A stage-1 LGD-3D trained with Adam on 8-frame clips of 192 demo videos (BN statistics
    recalibrated on one batch at the end): the model the Grad-CAM test trains, larger."""
    from tests.export import demo_model

    return demo_model.train_demo_model(steps, base_filters, batch_size=batch_size,
                                       learning_rate=learning_rate, seed=seed)


def localisation(model, class_names, videos, layer="local", method="gradcam"):
    """(fraction of frames whose heatmap peak is inside the digit's box, explanations, hits,
    fraction inside the union of the digit's boxes over the frames of the map's time step)."""
    from lgd_tf.analysis import explain
    from tests.export.digit_box import peak_in_digit_box

    hits, step_hits, results = [], [], []
    for frames, label, mask, motion, start in videos:
        result = explain.explain_frames(model, frames, class_names,
                                        class_name=class_names[label], layer=layer,
                                        method=method)
        hits.append(peak_in_digit_box(result.peaks(), mask, motion, start))
        step_hits.append(peak_in_digit_box(result.peaks(), mask, motion, start,
                                                frames_per_step=result.frames_per_step))
        results.append(result)
    return float(np.mean(hits)), results, hits, float(np.mean(step_hits))


def gradcam_example(output=GRADCAM_PNG, model=None, steps=400, seed=0, layer="res2",
                    method="gradcam++"):
    """Prints the localisation table, writes the grid PNG of one held-out demo video (map
    `layer`, `method`); returns (path, {(layer, method): (frame's box, step's boxes)})."""
    from lgd_tf.analysis import explain, grad_cam, rendering
    from lgd_tf.data import demo
    from lgd_tf.serving import loading

    if model is None:
        keras_model, class_names = train_demo_model(steps=steps, seed=seed), demo.CLASS_NAMES
    else:
        keras_model, class_names, _ = loading.load_keras_model(explain.find_model(model))
    videos = demo.labelled_videos("eval", 2, seed=2)
    table, shown = {}, None
    print(f"Peak inside the digit's box (the frame's own / the union over the frames of the "
          f"map's time step), {len(videos)} held-out videos:")
    for name in grad_cam.METHODS:
        cells = []
        for map_name in ("local", "res4", "res3", "res2"):
            fraction, results, hits, step = localisation(keras_model, class_names, videos,
                                                         layer=map_name, method=name)
            table[map_name, name] = (fraction, step)
            cells.append(f"{rendering.layer_text(map_name)} {fraction:.1%} / {step:.1%}")
            if (map_name, name) == (layer, method):
                shown = results, hits
        print(f"  {grad_cam.METHOD_NAMES[name]:<10}  " + ", ".join(cells), flush=True)
    if shown is None:  # a map outside the table (res5)
        _, results, hits, _ = localisation(keras_model, class_names, videos, layer=layer,
                                           method=method)
    else:
        results, hits = shown
    right = sum(int(np.argmax(result.probabilities)) == video[1]
                for result, video in zip(results, videos, strict=True))
    print(f"  videos classified right: {right}/{len(videos)}")
    # The figure: a correctly classified video with the best localisation.
    order = sorted(range(len(videos)), key=lambda i: (
        results[i].class_index != int(np.argmax(results[i].probabilities)),
        int(np.argmax(results[i].probabilities)) != videos[i][1], -hits[i].mean()))
    best = results[order[0]]
    path = rendering.write_grid(
        output, best, num_frames=6,
        title=f"{grad_cam.METHOD_NAMES[method]} on {rendering.layer_text(layer)} (local head, "
              f"Eq. 6): {best.class_name}, p={best.score:.2f}")
    return path, table


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("figure", choices=["gradcam"])
    parser.add_argument("--model", default=None)
    parser.add_argument("--output", default=str(GRADCAM_PNG))
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--layer", default="res2", choices=["local", "res2", "res3", "res4",
                                                            "res5"])
    parser.add_argument("--method", default="gradcam++", choices=["gradcam", "gradcam++"])
    args = parser.parse_args(argv)
    path, _ = gradcam_example(args.output, model=args.model, steps=args.steps,
                              layer=args.layer, method=args.method)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
