"""The local runner of the data build: worker processes on this machine.

Videos are decoded, resized and JPEG-encoded frame by frame (`encode.encode_video`) in a
`concurrent.futures.ProcessPoolExecutor` whose workers never load TensorFlow; this process
streams the results, in order, into the shards (`shards.write_shard`). A worker that dies
(e.g. SIGKILLed by the OOM killer) breaks the pool: the videos it held are retried once each
in a fresh pool, then reported as skipped; the build goes on. A video that cannot be decoded
is skipped and reported, never fatal.
"""

import collections
import concurrent.futures
import contextlib
import multiprocessing
import os
import sys
import time

from absl import logging

from lgd_io import tfrecord
from lgd_io.builder import encode, shards

WORKER_DIED = "worker process died (killed, e.g. out of memory) while encoding it, twice"
FRAMES_OPTIONS = shards.EncodeOptions(short_side=None)  # in-memory frames keep their size


def _single_opencv_thread():
    import cv2

    cv2.setNumThreads(1)


def _worker_context():
    """(multiprocessing context, worker initializer) of the pool.

    Workers must not carry TensorFlow. The command's process never imports it: its workers
    are forked (they start at once and inherit the decoders). A caller that has TensorFlow
    loaded (a script, a test) gets spawned workers, which import only `lgd_io` (and the
    caller's `__main__` module, as multiprocessing does: keep TensorFlow imports there under
    `if __name__ == "__main__"`).
    """
    if "tensorflow" in sys.modules or "keras" in sys.modules:
        return multiprocessing.get_context("spawn"), _single_opencv_thread
    return multiprocessing.get_context("fork"), None


def _retry_alone(worker, job, context):
    """Runs one job in a fresh one-worker pool: (record, error); a second death is reported."""
    context, initializer = context
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context,
                                                initializer=initializer) as pool:
        try:
            return pool.submit(worker, job).result()
        except concurrent.futures.process.BrokenProcessPool:
            return None, WORKER_DIED


def _pool_results(jobs, worker, num_workers):
    """Yields (job, record, error) for each job, in job order, computed in worker processes.

    At most 2 * num_workers + 2 results wait in memory. When a worker dies the pool breaks:
    every job it had not finished is retried alone in a fresh pool (so one bad video cannot
    take others with it twice), then the remaining jobs go to a new pool.
    """
    context, initializer = _worker_context()
    window, jobs, pool = collections.deque(), iter(jobs), None
    import cv2

    # One OpenCV thread per worker (TV-L1 flow): set in the parent, before any fork, so the
    # children inherit a pool they never have to tear down (doing it in a forked child can
    # wait for ever on a condition variable of the parent's pool threads).
    opencv_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        while True:
            if pool is None:
                pool = concurrent.futures.ProcessPoolExecutor(
                    num_workers, mp_context=context, initializer=initializer)
            for job in jobs:
                try:
                    future = pool.submit(worker, job)
                except concurrent.futures.process.BrokenProcessPool as error:
                    future = concurrent.futures.Future()  # retried below, as the others
                    future.set_exception(error)
                window.append((job, future))
                if len(window) >= 2 * num_workers + 2:
                    break
            if not window:
                return
            job, future = window.popleft()
            try:
                result = future.result()
            except concurrent.futures.process.BrokenProcessPool:
                affected = [(job, future)] + list(window)
                window.clear()
                pool.shutdown(wait=True, cancel_futures=True)
                pool = None
                logging.warning("A worker process died; retrying its %d videos one by one",
                                len(affected))
                for job, future in affected:
                    done = future.done() and not future.cancelled() and not future.exception()
                    yield (job, *(future.result() if done else
                                  _retry_alone(worker, job, (context, initializer))))
                continue
            yield (job, *result)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        cv2.setNumThreads(opencv_threads)


def _serial_results(jobs, worker):
    for job in jobs:
        yield (job, *worker(job))


def _serial_results(jobs, worker):
    for job in jobs:
        yield (job, *worker(job))


def build_from_videos(entries, output_dir, *, prefix="train", num_shards=8, num_workers=None,
                      options=shards.DEFAULT_OPTIONS):
    """Decodes each `VideoEntry` with PyAV and writes `{prefix}-SSSSS-of-NNNNN.tfrecord` shards.

    Idempotent: rerunning with the same (or a changed) input leaves exactly that input in the
    shards, each video once; finished shards whose videos did not change are kept. A change
    of `num_shards` or of `options` rebuilds every shard. Records in a shard are in media-id
    order, so the same input gives the same bytes.

    Args:
        entries: `VideoEntry`s; a repeated media id is dropped (counted in the summary).
        num_workers: worker processes (default: CPU count). The decoding always runs in
            worker processes, so a video that kills its process cannot stop the build.

    Returns:
        BuildSummary.
    """
    plan, summary = shards.plan(entries, output_dir, prefix=prefix, num_shards=num_shards,
                                options=options)
    jobs = [(shard, entry, options) for shard, entry, _ in plan.jobs()]
    workers = max(1, min(num_workers or os.cpu_count() or 1, len(jobs)))
    results = _pool_results(jobs, encode.encode_entry, workers)
    with contextlib.closing(results):  # the pool is shut down if writing fails
        progress = _Progress(len(jobs))
        for shard in sorted(plan.shards):
            path = shards.shard_path(output_dir, prefix, shard, num_shards)
            shard_results = (progress.step(next(results)[1:]) for _ in plan.shards[shard])
            manifest = shards.write_shard(path, plan.shards[shard], shard_results,
                                          num_shards=num_shards, options_key=plan.options_key)
            shards.add_to_summary(summary, path, manifest)
    return summary


class _Progress:
    """The progress line (absl INFO), about 20 times per build."""

    def __init__(self, total):
        self.total, self.done, self.start = total, 0, time.time()
        self.every = max(1, total // 20)

    def step(self, result):
        self.done += 1
        if self.done % self.every == 0 or self.done == self.total:
            rate = self.done / max(time.time() - self.start, 1e-9)
            logging.info("[%-20s] %d/%d videos, %.1f videos/s",
                         "#" * (20 * self.done // self.total), self.done, self.total, rate)
        return result


def build_from_frames(items, output_dir, *, prefix="train", num_shards=4, num_workers=1,
                      options=FRAMES_OPTIONS):
    """Writes in-memory videos `(frames, label, label_string, media_id)`, item i into shard
    i % num_shards (in-memory sets have no source file to key a manifest on: a rerun keeps
    the shards that exist)."""
    if num_shards < 1:
        raise ValueError(f"`num_shards` must be >= 1. Received: num_shards={num_shards}")
    summary = shards.BuildSummary()
    os.makedirs(output_dir, exist_ok=True)
    by_shard = collections.defaultdict(list)
    for i, item in enumerate(items):
        by_shard[i % num_shards].append(item)
    for shard in range(num_shards):
        path = shards.shard_path(output_dir, prefix, shard, num_shards)
        if os.path.exists(path):
            summary.shards_kept.append(path)
            continue
        jobs = [(shard, item, options) for item in by_shard[shard]]
        results = (_pool_results(jobs, encode.encode_item, num_workers) if num_workers > 1
                   else _serial_results(jobs, encode.encode_item))
        records = []
        for (_, item, _), record, error in results:
            if error is None:
                records.append(record)
                summary.written += 1
            else:
                summary.skipped.append((item[3], error))
        tfrecord.write_shard(path, records)
        summary.shards_written.append(path)
    return summary
