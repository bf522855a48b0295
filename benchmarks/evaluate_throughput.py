"""Multi-view evaluation at the model's rate: evaluate_video_level's views/s vs the forward's.

Writes synthetic videos (64 frames of 171x128 JPEG, through `lgd_tf.data.builder.
build_from_frames`), then in one run times:

- forward: the model's own clips/s (the softmax `evaluate_video_level` takes) on batches of
  views of the evaluation's shape (V views per video x videos per batch, 16 x 120 x 160 at the
  Sec. 5.2 settings: 15 clips of 16 frames, shorter side 120, whole frame), warm-up excluded;
- evaluate: `lgd_tf.training.evaluate_video_level` over the same videos (reading, parsing,
  decoding, resizing, sampling, forward, averaging), views/s = videos x V / seconds. It is run
  twice: cold (first call: the forward is traced) and warm (the figure compared);

and prints both and the ratio evaluate / forward.

    python benchmarks/evaluate_throughput.py                # R50 at the paper's view shape
    python benchmarks/evaluate_throughput.py --quick        # R50 at base_filters 16, ~3 min
    python benchmarks/evaluate_throughput.py --clips_table  # demo set: top-1 vs clips/video

The default run is 3 passes over 60 views of R50 (cold evaluate, forward, warm evaluate):
at the ~2 clips/s of 2 idle cores about 3 minutes; on the development machine shared by other
jobs (load 9-10) it took 15m42s (peak RSS 6.7 GB). Figures: benchmarks/README.md.

`--clips_table` trains the demo model of gin/demo.gin briefly (or loads `--demo_model_dir`)
and evaluates it on the demo eval set at 1, 3, 5 and 15 clips per video: video top-1, seconds
and views/s of each, so a user can pick the trade-off. The model sees 8-frame clips: the demo
videos have 16 frames, so 16-frame clips would be one view whatever the clip count. Training
is gin/demo.gin's schedule (about 2 minutes on 2 idle cores, 18 on the busy machine).
"""

import argparse
import functools
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from pipeline_throughput import synthetic_video  # noqa: E402  (same folder)

from lgd_tf import data, models  # noqa: E402
from lgd_tf.data import builder  # noqa: E402
from lgd_tf.training import evaluation  # noqa: E402
from lgd_tf.training.two_stage import DataSources  # noqa: E402


def make_shards(folder, num_videos, num_classes, num_frames=64):
    rng = np.random.default_rng(0)
    items = [(synthetic_video(rng, num_frames), k % num_classes, f"class{k % num_classes}",
              f"video{k:05d}") for k in range(num_videos)]
    builder.build_from_frames(items, folder, prefix="eval", num_shards=2)
    return os.path.join(folder, "eval-*")


def clock(fn):
    """(wall s, process CPU s, result) of fn()."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, result


class Forward:
    """The model's forward + softmax (what evaluate_video_level runs per view) on batches of
    random views: traced and warmed up on one view, then timed on `batch` views at a time."""

    def __init__(self, model, view_shape, batch):
        spec = tf.TensorSpec([None, view_shape[0], None, None, view_shape[-1]], tf.uint8)
        self.predict = tf.function(
            lambda x: models.class_probabilities(model(x, training=False)),
            input_signature=[spec])
        rng = np.random.default_rng(0)
        self.batch = tf.constant(rng.integers(0, 256, (batch, *view_shape)), tf.uint8)
        self.predict(self.batch[:1]).numpy()

    def run(self, num_views):
        """(wall, cpu) seconds for `num_views` views in batches (the last one may be smaller)."""
        def views():
            done = 0
            while done < num_views:
                n = min(num_views - done, int(self.batch.shape[0]))
                self.predict(self.batch[:n]).numpy()
                done += n
            return done
        wall, cpu, _ = clock(views)
        return wall, cpu


def evaluate(model, pattern, num_classes, batch_size, sampling):
    """(wall, cpu, results) of one evaluate_video_level call over `pattern`."""
    sources = DataSources(None, pattern, num_classes, [str(k) for k in range(num_classes)])
    with tempfile.TemporaryDirectory() as out:
        return clock(lambda: evaluation.evaluate_video_level(
            out, sources, model, "stage2", batch_size=batch_size,
            data_fn=functools.partial(data.eval_dataset, **sampling), write_files=False))


def throughput(args):
    """Prints forward clips/s, evaluate views/s and their ratio; returns the best rates as
    {"forward" | "evaluate": (per wall second, per CPU-second)}."""
    sampling = {"model": "3d", "num_frames": args.frames, "num_clips": args.clips,
                "short_side": args.short_side}
    view_shape = (args.frames, args.short_side, round(args.short_side * 171 / 128), 3)
    num_views = args.videos * args.clips
    with tempfile.TemporaryDirectory() as folder:
        pattern = make_shards(folder, args.videos, args.num_classes)
        tf.keras.utils.set_random_seed(0)
        model = models.lgd3d(depth=50, num_classes=args.num_classes, head="stage2",
                             num_frames=args.frames, base_filters=args.base_filters)
        batch = args.batch_size * args.clips
        print(f"LGD-3D R50 base_filters {args.base_filters}, {args.num_classes} classes; views "
              f"{'x'.join(map(str, view_shape[:3]))}: {args.clips} clips of {args.frames} "
              f"frames, shorter side {args.short_side}, whole frame; {args.videos} videos of "
              f"64 frames of 171x128 JPEG; {args.batch_size} videos per batch ({batch} views "
              f"per forward); load average {os.getloadavg()[0]:.1f}", flush=True)
        forward = Forward(model, view_shape, batch)
        wall, cpu, results = evaluate(model, pattern, args.num_classes, args.batch_size,
                                      sampling)
        assert results["num_videos"] * results["views_per_video"] == num_views
        print(f"evaluate, cold: {num_views / wall:7.3f} views/s ({wall:.1f} s: first call, "
              "the forward traced)", flush=True)
        rows = {"forward": [], "evaluate": []}
        for r in range(args.rounds):  # interleaved: both see the same load
            rows["forward"].append(forward.run(num_views))
            wall, cpu, _ = evaluate(model, pattern, args.num_classes, args.batch_size, sampling)
            rows["evaluate"].append((wall, cpu))
            print(f"round {r + 1}: forward {num_views / rows['forward'][-1][0]:7.3f} clips/s, "
                  f"evaluate {num_views / wall:7.3f} views/s  (load average "
                  f"{os.getloadavg()[0]:.1f})", flush=True)
        best = {k: (num_views / min(w for w, _ in v), num_views / min(c for _, c in v))
                for k, v in rows.items()}
        for key, unit in (("forward", "clips"), ("evaluate", "views")):
            print(f"{key:<9} {best[key][0]:7.3f} {unit}/s  {best[key][1]:7.3f} {unit} per "
                  f"CPU-second  (best of {args.rounds})")
        print(f"ratio evaluate / forward: {best['evaluate'][0] / best['forward'][0]:.3f} "
              f"(wall), {best['evaluate'][1] / best['forward'][1]:.3f} (per CPU-second)")
        return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="R50 at base_filters 16 (default 64), 6 videos")
    parser.add_argument("--base_filters", type=int, default=None)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--clips", type=int, default=15)
    parser.add_argument("--short_side", type=int, default=120)
    parser.add_argument("--videos", type=int, default=None)
    parser.add_argument("--batch_size", type=int, default=None,
                        help="videos per evaluation batch (default 2)")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--num_classes", type=int, default=400)
    parser.add_argument("--clips_table", action="store_true")
    parser.add_argument("--demo_model_dir", default=None,
                        help="--clips_table: a trained run (stage2.keras) to use, or where "
                             "to train one (default: a new temporary folder)")
    parser.add_argument("--demo_cache_dir", default="~/.cache/lgd_tf/demo")
    parser.add_argument("--table_clips", type=int, nargs="+", default=[1, 3, 5, 15])
    parser.add_argument("--table_views", type=int, default=60,
                        help="--clips_table: views per forward (videos per batch = this / clips)")
    args = parser.parse_args()
    if args.base_filters is None:
        args.base_filters = 16 if args.quick else 64
    if args.videos is None:
        args.videos = 6 if args.quick else 4
    if args.batch_size is None:
        args.batch_size = 2
    if args.rounds is None:
        args.rounds = 2 if args.quick else 3
    if args.clips_table:
        clips_table(args)
    else:
        throughput(args)


DEMO_FRAMES = 8  # clips of 8 of the demo videos' 16 frames: each clip count sees other frames


def train_demo_model(model_dir):
    """gin/demo.gin's model and schedule on 8-frame clips, no evaluation during training."""
    bindings = [f"lgd_tf.data.train_dataset.num_frames = {DEMO_FRAMES}",
                f"lgd_tf.data.eval_dataset.num_frames = {DEMO_FRAMES}",
                f"lgd_tf.models.lgd3d.num_frames = {DEMO_FRAMES}",
                "stage1/lgd_tf.training.fit_stage.eval_every_steps = None",
                "stage2/lgd_tf.training.fit_stage.eval_every_steps = None"]
    command = [sys.executable, "-m", "lgd_tf.train", "--gin_file=demo.gin",
               f"--model_dir={model_dir}", "--noevaluate"]
    command += [f"--gin_bindings={b}" for b in bindings]
    print("training the demo model:", " ".join(command[1:]), flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    print(f"trained in {time.perf_counter() - started:.0f} s", flush=True)


def clips_table(args):
    demo = data.build_demo_dataset(os.path.expanduser(args.demo_cache_dir))
    model_dir = args.demo_model_dir or tempfile.mkdtemp(prefix="lgd_demo_")
    if not os.path.exists(os.path.join(model_dir, "stage2.keras")):
        train_demo_model(model_dir)
    model, stage = evaluation.load_stage_model(model_dir)
    frames = model.input_shape[1]
    sources = DataSources(None, demo.eval_pattern, demo.num_classes, demo.class_names)

    def run(clips):
        sampling = dict(demo.eval_kwargs, num_frames=frames, num_clips=clips)
        with tempfile.TemporaryDirectory() as out:
            return clock(lambda: evaluation.evaluate_video_level(
                out, sources, model, stage, batch_size=max(1, args.table_views // clips),
                data_fn=functools.partial(data.eval_dataset, **sampling), write_files=False))

    run(1)  # traces the forward (one trace serves every clip count)
    print(f"demo eval set, {model_dir}/{stage}.keras: {frames}-frame clips of the 16-frame "
          f"64x64 videos, whole frame, about {args.table_views} views per forward; "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'clips/video':>11} {'videos':>6} {'top-1':>7} {'seconds':>8} {'views/s':>8} "
          f"{'videos/s':>8}")
    for clips in args.table_clips:
        wall, _, results = run(clips)
        views = results["num_videos"] * results["views_per_video"]
        print(f"{clips:>11} {results['num_videos']:>6} {100 * results['top1']:6.1f}% "
              f"{wall:8.1f} {views / wall:8.1f} {results['num_videos'] / wall:8.1f}",
              flush=True)


if __name__ == "__main__":
    main()
