"""Memory of `predict`: over many videos in one process, and against the video's length.

    python benchmarks/predict_memory.py [--num_videos=200] [--mode=loaded|path|reload]
    python benchmarks/predict_memory.py --mode=length [--lengths=300,3000] [--size=320x240]

A tiny LGD-3D (random weights; memory does not depend on them) is exported
(`lgd_tf.serving.export.export_model`) with the default Sec. 5.2 sampling (15 clips, shorter side
120), then `lgd_tf.inference.predict.predict_video` scores videos written here with PyAV, cycling
over 10 files of different lengths and sizes (so any per-shape retracing or cache would show up
as growth):
  --mode=loaded  one `load_classifier(export_dir)` reused for every video (a serving loop);
  --mode=path    the SavedModel path passed on every call (predict_video keeps recently
                 loaded models, keyed by file and modification time);
  --mode=reload  `load_classifier(export_dir)` again for every video (a service picking up
                 new model versions; shows what a load leaves behind).
Prints RSS (VmRSS of /proc/self/status) at each checkpoint, the growth from video 1 and from
video 50 (after warm-up) to the last, and MB per 100 videos.

  --mode=length  peak RSS against the video's length: one video per length (moving noise,
                 320x240, 25 fps), each scored in a fresh process (VmHWM, the process's peak
                 RSS; ru_maxrss would keep the forking parent's peak across exec) by the
                 streaming `predict_video` and, for comparison, by the whole-video path
                 (`video_frames` + `VideoClassifier.video_probabilities`, every frame decoded
                 and held); prints peak RSS per length and path and the difference between
                 the longest and the shortest video.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

NUM_FILES = 10


def rss_mb(field="VmRSS"):
    """VmRSS (now) or VmHWM (peak) of /proc/self/status, MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def make_videos(folder):
    """10 videos: 20..65 frames, 160x120 to 224x168, moving noise."""
    from lgd_tf.data import video

    rng = np.random.default_rng(0)
    paths = []
    for k in range(NUM_FILES):
        n, height, width = 20 + 5 * k, 120 + 8 * (k % 7), 160 + 8 * (k % 9)
        base = rng.integers(0, 256, (height, width + n, 3), dtype=np.uint8)
        frames = np.stack([base[:, i:i + width] for i in range(n)])
        path = folder / f"video{k}.mp4"
        video.write_frames(path, frames, codec="mpeg4", fps=25)
        paths.append(path)
    return paths


def export_tiny_model(folder):
    import lgd_tf
    from lgd_tf.serving import export

    model = lgd_tf.models.lgd3d(num_classes=10, stage_blocks=(1, 1, 1, 1), base_filters=8,
                                num_frames=8, sketch_dim=256)
    return export.export_model(model, folder / "export", top_k=5).saved_model_dir


def write_long_video(path, num_frames, height, width, fps=25):
    """`num_frames` of moving noise, encoded as they are made (the writer holds one frame)."""
    from lgd_tf.data import video

    rng = np.random.default_rng(num_frames)
    base = rng.integers(0, 256, (height, width * 2, 3), dtype=np.uint8)

    def frames():
        for i in range(num_frames):
            shift = (3 * i) % width
            yield np.ascontiguousarray(base[:, shift:shift + width])

    video.write_frames(path, frames(), codec="mpeg4", fps=fps)


def score_one(args):
    """Child process of --mode=length: scores one video, prints its figures as JSON."""
    from lgd_tf.inference import classifier as classifier_lib
    from lgd_tf.inference import predict

    clf = classifier_lib.load_classifier(args.export)
    loaded = rss_mb("VmHWM")
    started = time.perf_counter()
    if args.path == "stream":
        probabilities = predict.predict_video(clf, args.video).probabilities
    else:
        frames = predict.video_frames(args.video, 3, clf.sampling.short_side)
        probabilities = clf.video_probabilities(frames)
    seconds = time.perf_counter() - started
    peak = rss_mb("VmHWM")
    print(json.dumps({"loaded_mb": loaded, "peak_mb": peak, "seconds": seconds,
                      "probabilities": [float(p) for p in probabilities]}))


def length_mode(args):
    lengths = [int(n) for n in args.lengths.split(",")]
    width, height = (int(v) for v in args.size.lower().split("x"))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = pathlib.Path(tmp)
        saved_model = export_tiny_model(folder)
        for n in lengths:
            video = folder / f"noise_{n}.mp4"
            write_long_video(video, n, height, width)
            for path in args.paths.split(","):
                result = subprocess.run(
                    [sys.executable, __file__, "--mode=_one", f"--export={saved_model}",
                     f"--video={video}", f"--path={path}"],
                    capture_output=True, text=True, env=env, check=True)
                results[n, path] = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"predict_memory: mode=length, {width}x{height} moving noise at 25 fps, tiny LGD-3D "
          f"SavedModel, 15 clips x 8 frames, short side 120; one fresh process per video")
    print(f"{'frames':>7} {'path':>7} {'peak after load MB':>19} {'peak RSS MB':>12} "
          f"{'seconds':>8}")
    for (n, path), r in results.items():
        print(f"{n:>7} {path:>7} {r['loaded_mb']:>19.1f} {r['peak_mb']:>12.1f} "
              f"{r['seconds']:>8.1f}")
    short, long = min(lengths), max(lengths)
    for path in args.paths.split(","):
        a, b = results[short, path]["peak_mb"], results[long, path]["peak_mb"]
        print(f"{path}: peak RSS {long} frames - {short} frames = {b - a:+.1f} MB "
              f"({a:.1f} -> {b:.1f} MB)")
    if "stream" in args.paths and "whole" in args.paths:
        gap = max(abs(np.subtract(results[n, "stream"]["probabilities"],
                                  results[n, "whole"]["probabilities"])).max()
                  for n in lengths)
        print(f"stream vs whole-video scores: max |difference| {gap:.2e}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_videos", type=int, default=200)
    parser.add_argument("--mode", choices=["loaded", "path", "reload", "length", "_one"],
                        default="loaded")
    parser.add_argument("--lengths", default="300,3000", help="--mode=length: frame counts")
    parser.add_argument("--size", default="320x240", help="--mode=length: WIDTHxHEIGHT")
    parser.add_argument("--paths", default="stream,whole",
                        help="--mode=length: stream (predict_video) and/or whole")
    parser.add_argument("--export", help=argparse.SUPPRESS)
    parser.add_argument("--video", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode == "_one":
        return score_one(args)
    if args.mode == "length":
        return length_mode(args)

    from lgd_tf.inference import classifier as classifier_lib
    from lgd_tf.inference import predict

    with tempfile.TemporaryDirectory() as tmp:
        folder = pathlib.Path(tmp)
        videos = make_videos(folder)
        saved_model = export_tiny_model(folder)
        model = (classifier_lib.load_classifier(saved_model) if args.mode == "loaded"
                 else str(saved_model))
        marks = sorted({1, *range(50, args.num_videos + 1, 50), args.num_videos})
        rows, started = [], time.perf_counter()
        for i in range(1, args.num_videos + 1):
            if args.mode == "reload":
                model = classifier_lib.load_classifier(saved_model)
            prediction = predict.predict_video(model, videos[(i - 1) % NUM_FILES])
            assert prediction.probabilities.shape == (10,)
            if i in marks:
                rows.append((i, rss_mb(), time.perf_counter() - started))
    print(f"predict_memory: mode={args.mode}, {args.num_videos} videos ({NUM_FILES} files of "
          f"20-65 frames, 160x120-224x168), tiny LGD-3D SavedModel, 15 clips x 8 frames, "
          f"short side 120")
    print(f"{'videos':>7} {'RSS MB':>9} {'seconds':>8}")
    for i, rss, seconds in rows:
        print(f"{i:>7} {rss:>9.1f} {seconds:>8.1f}")
    first, last = rows[0][1], rows[-1][1]
    warm = next((rss for i, rss, _ in rows if i == 50), first)
    span = args.num_videos - (50 if len(rows) > 2 else 1)
    print(f"RSS first -> last: {first:.1f} -> {last:.1f} MB ({last - first:+.1f} MB, "
          f"ratio {last / first:.3f}); after warm-up (video 50) -> last: {last - warm:+.1f} MB, "
          f"{100 * (last - warm) / max(span, 1):+.2f} MB per 100 videos")


if __name__ == "__main__":
    main()
