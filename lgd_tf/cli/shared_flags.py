"""Flags that several commands define alike: the evaluation sampling (export, predict) and the
two-stream late fusion (evaluate, predict; Sec. 5.5)."""

from absl import flags

from lgd_tf.runs import fusion

# Flag -> (its define function, its enum values or None, what it sets). Each is None by
# default: the recorded sampling (the run's, the export's), else the Sec. 5.2 defaults.
SAMPLING = {
    "model_type": (flags.DEFINE_enum, ["3d", "2d"], "sampling of the in-graph evaluation views"),
    "num_clips": (flags.DEFINE_integer, None, "clips (3D) / frame tuples (2D) per video"),
    "num_crops": (flags.DEFINE_integer, None, "1 (whole frame) or 3 crops per clip"),
    "short_side": (flags.DEFINE_integer, None, "frames resized to this shorter side"),
    "temporal_stride": (flags.DEFINE_integer, None, "3D: every n-th frame in a clip (as in "
                        "training)"),
    "short_video": (flags.DEFINE_enum, ["loop", "pad"], "videos shorter than a clip: indices "
                    "wrap around or the last frame repeats"),
}


def define_sampling_flags(fv, defaults, *, module_name):
    """Defines the evaluation-sampling flags named in `defaults` ({flag: what its default is,
    for the help}), each None unless given; `--help` lists them with the flags of
    `module_name` (the command's module)."""
    for name, default in defaults.items():
        define, values, what = SAMPLING[name]
        enum = (values,) if values is not None else ()
        define(name, None, *enum, f"{what}; default: {default}.", flag_values=fv,
               module_name=module_name)


def define_fusion_flags(fv, fuse_with_help, *, module_name):
    """--fuse_with (a second model, `fuse_with_help`) and --fusion_weight w of the late fusion
    (1 - w) * rgb + w * flow, listed by `--help` with the flags of `module_name`."""
    flags.DEFINE_string("fuse_with", None, fuse_with_help, flag_values=fv,
                        module_name=module_name)
    flags.DEFINE_float("fusion_weight", fusion.DEFAULT_FLOW_WEIGHT, "w in (1 - w) * rgb + w "
                       "* flow: the weight of the flow stream (or of --fuse_with) in the fusion.",
                       flag_values=fv, module_name=module_name)
