"""Memory of `predict` over many videos in one process: RSS after video 1, 50, 100, 150, 200.

    python benchmarks/predict_memory.py [--num_videos=200] [--mode=loaded|path]

A tiny LGD-3D (random weights; memory does not depend on them) is exported
(`lgd_tf.serving.export.export_model`) with the default Sec. 5.2 sampling (15 clips, shorter side
120), then `lgd_tf.serving.predict.predict_video` scores videos written here with PyAV, cycling
over 10 files of different lengths and sizes (so any per-shape retracing or cache would show up
as growth):
  --mode=loaded  one `load_classifier(export_dir)` reused for every video (a serving loop);
  --mode=path    the SavedModel path passed on every call (predict_video keeps recently
                 loaded models, keyed by file and modification time);
  --mode=reload  `load_classifier(export_dir)` again for every video (a service picking up
                 new model versions; shows what a load leaves behind).
Prints RSS (VmRSS of /proc/self/status) at each checkpoint, the growth from video 1 and from
video 50 (after warm-up) to the last, and MB per 100 videos.
"""

import argparse
import os
import pathlib
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import av  # noqa: E402
import numpy as np  # noqa: E402

NUM_FILES = 10


def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def write_video(path, frames, fps=25):
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def make_videos(folder):
    """10 videos: 20..65 frames, 160x120 to 224x168, moving noise."""
    rng = np.random.default_rng(0)
    paths = []
    for k in range(NUM_FILES):
        n, height, width = 20 + 5 * k, 120 + 8 * (k % 7), 160 + 8 * (k % 9)
        base = rng.integers(0, 256, (height, width + n, 3), dtype=np.uint8)
        frames = np.stack([base[:, i:i + width] for i in range(n)])
        path = folder / f"video{k}.mp4"
        write_video(path, frames)
        paths.append(path)
    return paths


def export_tiny_model(folder):
    import lgd_tf
    from lgd_tf.serving import export

    model = lgd_tf.models.lgd3d(num_classes=10, stage_blocks=(1, 1, 1, 1), base_filters=8,
                                num_frames=8, sketch_dim=256)
    return export.export_model(model, folder / "export", top_k=5).saved_model_dir


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_videos", type=int, default=200)
    parser.add_argument("--mode", choices=["loaded", "path", "reload"], default="loaded")
    args = parser.parse_args()

    from lgd_tf.serving import classifier as classifier_lib
    from lgd_tf.serving import predict

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
