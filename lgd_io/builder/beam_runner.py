"""The data build as an Apache Beam pipeline: one task per shard, workers without TensorFlow.

Shape: the video list is grouped by shard (`shards.plan`, the same stable hash of the media
id as the local runner), the groups are spread over the workers (`Reshuffle`), and one task
encodes the videos of one shard and writes it (`shards.write_shard`: temporary name, renamed
when complete, then its manifest). Encoded records are never shuffled across the cluster. A
video that fails is listed in the manifest and the summary, not retried; Beam's own retries
cover a lost worker (a retried task rewrites its shard from the start). A rerun keeps the
finished shards, as the local runner does, and the shards hold the same bytes.

Without `--runner` in the pipeline options, the pipeline runs on this machine on Beam's
FnApiRunner with `num_workers` worker processes (`direct_running_mode=multi_processing`),
with no network access (the plain DirectRunner first tries to download the Prism runner).
The output folder must be readable and writable by the driver and every worker under the
same path (this machine's disk, or a shared file system mounted on a cluster's workers).
"""

import os

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

import lgd_io
from lgd_io.builder import encode, shards
from lgd_io.errors import RunFailure


def pipeline_options(pipeline_args, num_workers):
    """Beam's options: `pipeline_args` as given, or the local FnApiRunner when they name no
    runner (`num_workers` processes, default the CPU count)."""
    args = list(pipeline_args)
    if not any(a == "--runner" or a.startswith("--runner=") for a in args):
        args = ["--runner=FnApiRunner",
                f"--direct_num_workers={num_workers or os.cpu_count() or 1}",
                "--direct_running_mode=multi_processing",
                "--default_sdk_harness_log_level=WARNING", *args]
    return PipelineOptions(args)


def write_shard_task(task, *, output_dir, prefix, num_shards, options, options_key):
    """The work of one Beam task: encodes the videos of one shard and writes it; returns the
    shard's path. `task` is (shard index, [(entry, source)] in media-id order)."""
    shard, planned = task
    path = shards.shard_path(output_dir, prefix, shard, num_shards)
    results = (encode.encode_entry((shard, entry, options)) for entry, _ in planned)
    shards.write_shard(path, planned, results, num_shards=num_shards, options_key=options_key)
    return path


def _package_on_worker_path():
    """Local worker processes are fresh interpreters: they find `lgd_io` where this process
    did (a checkout on sys.path is not in their environment otherwise)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(lgd_io.__file__)))
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if root not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([root, *paths])


def build_with_beam(entries, output_dir, *, prefix="train", num_shards=8, num_workers=None,
                    options=shards.DEFAULT_OPTIONS, pipeline_args=()):
    """`local.build_from_videos` as a Beam pipeline (same arguments, same shards and
    manifests); `pipeline_args` are Beam's own options (`--runner=DataflowRunner ...`).

    Returns:
        BuildSummary, read back from the manifests the tasks wrote.
    """
    plan, summary = shards.plan(entries, output_dir, prefix=prefix, num_shards=num_shards,
                                options=options)
    tasks = sorted(plan.shards.items())
    if tasks:
        _package_on_worker_path()
        with beam.Pipeline(options=pipeline_options(pipeline_args, num_workers)) as pipeline:
            _ = (pipeline
                 | "Shards" >> beam.Create(tasks)
                 | "Spread" >> beam.Reshuffle()
                 | "EncodeAndWrite" >> beam.Map(
                     write_shard_task, output_dir=output_dir, prefix=prefix,
                     num_shards=num_shards, options=options, options_key=plan.options_key))
    for shard, _ in tasks:
        path = shards.shard_path(output_dir, prefix, shard, num_shards)
        manifest = shards.read_manifest(shards.manifest_path(path))
        if manifest is None or not os.path.exists(path):
            raise RunFailure(f"the Beam pipeline ended without writing {path}; rerun the same "
                             "command to build the missing shards")
        shards.add_to_summary(summary, path, manifest)
    return summary
