r"""TFRecord builder: memory, start-up and throughput of the local and Beam runners.

    python benchmarks/builder_throughput.py [--workers=2] [--videos=8] [--seconds=10] \
        [--before=REV]

Generates its videos with PyAV (nothing is downloaded), then prints:
1. memory: one 1920x1080 video of 30 and of 90 frames, each built by a fresh process with
   one worker: peak RSS of the build's process and of its worker, their sum (an upper bound
   of the process tree's peak) and the growth from 30 to 90 frames. Targets: tree < 900 MB,
   growth < 150 MB.
2. start-up: a fresh interpreter importing what a worker imports (`lgd_io.builder.encode`; a
   Beam worker also imports Beam's SDK harness), against the builder of --before, which
   imported TensorFlow: wall time and RSS.
3. throughput: --videos Kinetics-like videos (340x256, --seconds s at 25 fps, h264) into 4
   shards at shorter side 128 with --workers workers: the local runner before (the builder
   at git revision --before: forked workers of a TensorFlow parent, tf.io.TFRecordWriter)
   and after (TF-free workers), and the Beam runner (FnApiRunner, multi-processing):
   videos/s, MB/s of input, worker peak RSS; for Beam also its fixed start-up (a one-video
   build) and the rate without it.
4. flow: one video of 20 frames per worker with --flow (TV-L1) on the lean local runner:
   seconds per frame pair.
5. extrapolation: a Kinetics-400 build (300k videos of 10 s) on 100 workers, with and
   without flow, from the per-worker rates above (linear scaling assumed).
The run takes several minutes on 2 cores.
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
BEFORE = "9a5bb45"  # the last revision whose builder loaded TensorFlow in its workers
KINETICS_VIDEOS = 300_000

_BUILD = r"""
import glob, json, os, resource, sys, time
sys.path.insert(0, {root!r})
if {runner!r} == "before":
    from lgd_tf.data import builder as build
else:
    from lgd_io import builder as build
entries = [build.VideoEntry(p, 0, "c", f"v{{i}}") for i, p in enumerate({paths!r})]
options = build.EncodeOptions(flow={flow!r})
start = time.time()
if {runner!r} == "beam":
    from lgd_io.builder import beam_runner
    summary = beam_runner.build_with_beam(entries, {out!r}, num_shards={shards},
                                          num_workers={workers}, options=options)
else:
    summary = build.build_from_videos(entries, {out!r}, num_shards={shards},
                                      num_workers={workers}, options=options)
wall = time.time() - start
probes = [json.load(open(p)) for p in glob.glob(os.path.join({probes!r}, "*.json"))]
print(json.dumps({{"wall_s": wall, "written": summary.written,
                  "tensorflow": "tensorflow" in sys.modules,
                  "parent_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "worker_kb": max([resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]
                                   + [p["maxrss_kb"] for p in probes])}}))
"""

_STARTUP = ("import resource, sys, time; t = time.time(); sys.path.insert(0, {root!r}); "
            "import {modules}; print(time.time() - t, "
            "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")


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


def _env(**extra):
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **extra)


def run_build(paths, out, workers, shards, *, runner="local", root=REPO, flow=False):
    """Builds in a fresh process; returns its JSON line (wall time, peak RSS in kB)."""
    probes = f"{out}.probes"
    script = _BUILD.format(root=root, runner=runner, paths=list(paths), out=out, flow=flow,
                           shards=shards, workers=workers, probes=probes)
    env = _env() if runner == "before" else _env(LGD_BUILD_PROBE=probes)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=env, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def startup(modules, root=REPO):
    """(seconds, MB) of a fresh interpreter importing `modules`."""
    out = subprocess.run([sys.executable, "-c", _STARTUP.format(root=root, modules=modules)],
                         capture_output=True, text=True, env=_env(), check=True).stdout
    seconds, kb = out.split()[-2:]
    return float(seconds), int(kb) / 1024


def before_tree(revision, folder):
    """The repository at `revision`, exported into `folder` (None without git)."""
    try:
        archive = subprocess.run(["git", "-C", REPO, "archive", revision], check=True,
                                 capture_output=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    os.makedirs(folder)
    subprocess.run(["tar", "-x", "-C", folder], input=archive, check=True)
    return folder


def memory(root, old):
    print("memory: one 1920x1080 video, one worker, fresh process per build")
    peaks = {}
    for frames, runner in ((30, "local"), (90, "local"), (90, "before")):
        if runner == "before" and old is None:
            continue
        path = make_video(os.path.join(root, f"hd{frames}.mp4"), frames, 1080, 1920)
        r = run_build([path], os.path.join(root, f"hd{frames}{runner}"), 1, 1, runner=runner,
                      root=old if runner == "before" else REPO)
        if runner == "before":
            print(f"  before ({BEFORE}), {frames} frames: build process "
                  f"{r['parent_kb'] / 1024:.0f} MB, worker {r['worker_kb'] / 1024:.0f} MB "
                  f"(the worker is forked from it: they share TensorFlow's pages)")
            continue
        peaks[frames] = r
        tree = (r["parent_kb"] + r["worker_kb"]) / 1024
        print(f"  {frames} frames: build process {r['parent_kb'] / 1024:.0f} MB, worker "
              f"{r['worker_kb'] / 1024:.0f} MB, tree <= {tree:.0f} MB; {r['wall_s']:.1f} s, "
              f"TensorFlow in the build process: {r['tensorflow']}")
    growth = (peaks[90]["worker_kb"] - peaks[30]["worker_kb"]) / 1024
    worst = max(r["parent_kb"] + r["worker_kb"] for r in peaks.values()) / 1024
    print(f"  growth 30 -> 90 frames: {growth:+.0f} MB (target < 150 MB); highest tree "
          f"{worst:.0f} MB (target < 900 MB)")


def startups(old):
    print("worker start-up: fresh interpreter, import only")
    for name, modules, tree in (
            ("lean local worker (lgd_io.builder.encode)", "lgd_io.builder.encode", REPO),
            ("lean Beam worker (+ Beam SDK harness)",
             "apache_beam.runners.worker.sdk_worker_main, lgd_io.builder.beam_runner", REPO),
            (f"before ({BEFORE}: lgd_tf.data.builder, TensorFlow)", "lgd_tf.data.builder",
             old)):
        if tree is not None:
            seconds, megabytes = startup(modules, tree)
            print(f"  {name}: {seconds:.1f} s, {megabytes:.0f} MB RSS")


def throughput(root, args, old):
    frames = int(round(args.seconds * 25))
    print(f"throughput: {args.videos} videos 340x256, {frames} frames (25 fps), "
          f"{args.workers} workers, 4 shards, short side 128")
    paths = [make_video(os.path.join(root, f"k{i}.mp4"), frames, 256, 340)
             for i in range(args.videos)]
    megabytes = sum(os.path.getsize(p) for p in paths) / 1e6
    rates = {}
    for runner, tree in (("before", old), ("local", REPO), ("beam", REPO)):
        if tree is None:
            continue
        r = run_build(paths, os.path.join(root, runner), args.workers, 4, runner=runner,
                      root=tree)
        rate = r["written"] / r["wall_s"]
        print(f"  {runner:6s}: {r['written']} videos in {r['wall_s']:.1f} s, {rate:.2f} "
              f"videos/s, {megabytes / r['wall_s']:.2f} MB/s of input ({megabytes:.1f} MB), "
              f"worker peak RSS {r['worker_kb'] / 1024:.0f} MB, build process "
              f"{r['parent_kb'] / 1024:.0f} MB")
        rates[runner] = rate
        if runner == "beam":
            fixed = run_build(paths[:1], os.path.join(root, "beam1"), args.workers, 1,
                              runner="beam")["wall_s"]
            working = max(r["wall_s"] - fixed, 1e-3)
            rates["beam"] = r["written"] / working
            print(f"          the pipeline's fixed start-up and teardown (a one-video build): "
                  f"{fixed:.1f} s; without it {rates['beam']:.2f} videos/s, "
                  f"{megabytes / working:.2f} MB/s")
    return rates, frames


def flow_cost(root, workers, frames=20):
    paths = [make_video(os.path.join(root, f"f{i}.mp4"), frames, 256, 340)
             for i in range(workers)]
    r = run_build(paths, os.path.join(root, "flow"), workers, workers, flow=True)
    per_pair = r["wall_s"] / (frames - 1)
    print(f"flow: {workers} videos 340x256 of {frames} frames with --flow (lean local runner), "
          f"{workers} workers: {r['wall_s']:.1f} s, {per_pair:.3f} s per frame pair per "
          "worker (decoding and JPEG included)")
    return per_pair


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--before", default=BEFORE, help="git revision of the old builder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        old = before_tree(args.before, os.path.join(root, "before"))
        memory(root, old)
        startups(old)
        rates, frames = throughput(root, args, old)
        per_pair = flow_cost(root, args.workers)
        print(f"extrapolated Kinetics-400 build ({KINETICS_VIDEOS} videos of 10 s) on 100 "
              "workers, linear scaling assumed (Beam: its rate without the fixed start-up):")
        for runner, rate in rates.items():
            per_video = args.workers / rate * (250 / frames)  # s per 10-s video per worker
            hours = KINETICS_VIDEOS * per_video / 100 / 3600
            with_flow = KINETICS_VIDEOS * 249 * per_pair / 100 / 3600
            print(f"  {runner:6s}: {hours:.1f} h without flow; with flow {with_flow:.0f} h "
                  f"({per_pair:.2f} s per frame pair, 249 pairs per video)")


if __name__ == "__main__":
    main()
