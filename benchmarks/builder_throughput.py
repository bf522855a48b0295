r"""TFRecord builder: peak memory per worker and throughput of the local runner.

    python benchmarks/builder_throughput.py [--workers=2] [--videos=8] [--seconds=10]

Generates its videos with PyAV (nothing is downloaded), then
1. memory: one 1920x1080 video of 30 and of 90 frames, each built by a fresh process
   (`build_from_videos`, one worker); prints the peak RSS of the build's worker and of the
   whole build (the parent holds TensorFlow) and the growth from 30 to 90 frames. Target:
   peak < 900 MB and growth < 150 MB (frames are resized and JPEG-encoded as decoded).
2. throughput: --videos Kinetics-like videos (340x256, --seconds s at 25 fps, h264) built
   with --workers workers into 4 shards at the default shorter side 128; prints videos/s,
   MB/s of input and frames/s, and the extrapolation to 300k videos (Kinetics-400 train+val
   is about 260k clips of 10 s).
Figures go to stdout; the run takes a few minutes on 2 cores.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import av
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_BUILD = r"""
import json, resource, sys, time
sys.path.insert(0, {repo!r})
from lgd_tf.data import builder
entries = [builder.VideoEntry(p, 0, "c", f"v{{i}}") for i, p in enumerate({paths!r})]
start = time.time()
summary = builder.build_from_videos(entries, {out!r}, num_shards={shards}, num_workers={workers})
wall = time.time() - start
print(json.dumps({{"wall_s": wall, "written": summary.written,
                  "parent_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "worker_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}}))
"""


def make_video(path, num_frames, height, width, fps=25):
    """A moving gradient with noise (h264, ultrafast): decodes like a real clip."""
    rng = np.random.default_rng(0)
    base = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        noise = rng.integers(0, 32, (height, width, 3), dtype=np.uint8)
        for i in range(num_frames):
            image = (np.roll(base, 7 * i, axis=1) + np.zeros((height, 1, 3), np.float32))
            image = (image.astype(np.uint8) + np.roll(noise, i, axis=0))
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def run_build(paths, out, workers, shards):
    """Builds in a fresh process; returns its JSON line (wall time, peak RSS in kB)."""
    script = _BUILD.format(repo=REPO, paths=list(paths), out=out, shards=shards,
                           workers=workers)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=env, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        print("memory: one 1920x1080 video, one worker (fresh process per build)")
        peaks = {}
        for frames in (30, 90):
            path = make_video(os.path.join(root, f"hd{frames}.mp4"), frames, 1080, 1920)
            r = run_build([path], os.path.join(root, f"hd{frames}"), 1, 1)
            peaks[frames] = r
            print(f"  {frames} frames: worker peak RSS {r['worker_kb'] / 1024:.0f} MB, "
                  f"build parent {r['parent_kb'] / 1024:.0f} MB, {r['wall_s']:.1f} s "
                  f"({frames / r['wall_s']:.1f} frames/s), "
                  f"input {os.path.getsize(path) / 1e6:.1f} MB")
        growth = (peaks[90]["worker_kb"] - peaks[30]["worker_kb"]) / 1024
        worst = max(max(r["worker_kb"], r["parent_kb"]) for r in peaks.values()) / 1024
        print(f"  growth 30 -> 90 frames: {growth:+.0f} MB (target < 150 MB); "
              f"highest peak {worst:.0f} MB (target < 900 MB)")

        frames = int(round(args.seconds * 25))
        print(f"throughput: {args.videos} videos 340x256, {frames} frames (25 fps), "
              f"{args.workers} workers, 4 shards, short side 128")
        paths = [make_video(os.path.join(root, f"k{i}.mp4"), frames, 256, 340)
                 for i in range(args.videos)]
        megabytes = sum(os.path.getsize(p) for p in paths) / 1e6
        r = run_build(paths, os.path.join(root, "k"), args.workers, 4)
        rate = args.videos / r["wall_s"]
        print(f"  {r['written']} videos in {r['wall_s']:.1f} s: {rate:.2f} videos/s, "
              f"{megabytes / r['wall_s']:.2f} MB/s of input ({megabytes:.1f} MB), "
              f"{rate * frames:.0f} frames/s; worker peak RSS {r['worker_kb'] / 1024:.0f} MB")
        per_core = rate / args.workers
        for cores in (2, 16, 64):
            hours = 300_000 / (per_core * cores) / 3600
            print(f"  extrapolated: 300k such videos on {cores} cores: {hours:.1f} h "
                  f"({per_core:.2f} videos/s per core, linear scaling assumed)")
        r1 = run_build(paths, os.path.join(root, "k1"), 1, 4)
        print(f"  1 worker: {args.videos / r1['wall_s']:.2f} videos/s; "
              f"{args.workers} workers / 1 worker = {r1['wall_s'] / r['wall_s']:.2f}x")


if __name__ == "__main__":
    main()
