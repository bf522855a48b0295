"""Whether this CPU computes a mixed-precision policy in hardware.

TensorFlow's CPU kernels (oneDNN) run bfloat16 convolutions and matrix products on the
AVX512_BF16 or AMX-BF16 instructions of x86 CPUs and on the BF16 extension of Arm CPUs. A CPU
without them emulates bfloat16 and is slower than float32, not faster: on a 2-core AMD EPYC
(Zen 3, AVX2 only) the LGD-3D R50 train step (16x112x112, batch 2) ran at 0.107x its float32
clips/s under mixed_bfloat16 and the forward at 0.45x, where a CPU with AVX512_BF16 runs the
train step 1.5-1.6x faster than float32 (`benchmarks/model_throughput.py --bf16`). Training
under that policy on such a machine is a mistake worth one line before the first step.
"""

import tensorflow as tf

# /proc/cpuinfo flags ("flags" on x86, "Features" on Arm) of bfloat16 arithmetic.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")
CPUINFO = "/proc/cpuinfo"


def _cpuinfo_lines(path):
    with open(path or CPUINFO, encoding="utf-8", errors="replace") as f:
        yield from f


def cpu_flags(path=None):
    """The instruction-set flags of the first CPU in `path` (default /proc/cpuinfo, Linux),
    or None if unreadable."""
    try:
        for line in _cpuinfo_lines(path):
            key, _, value = line.partition(":")
            if key.strip().lower() in ("flags", "features"):
                return frozenset(value.split())
    except OSError:
        return None
    return None


def cpu_model_name(path=None):
    """The CPU's model name from `path` (default /proc/cpuinfo), or "this CPU"."""
    try:
        for line in _cpuinfo_lines(path):
            key, _, value = line.partition(":")
            if key.strip().lower() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return "this CPU"


def cpu_computes_bfloat16(flags):
    """True / False whether `flags` hold a bfloat16 instruction set; None if flags unknown."""
    if flags is None:
        return None
    return any(flag in flags for flag in BF16_CPU_FLAGS)


def slow_policy_warning(policy_name, has_accelerator, flags, cpu_name="this CPU"):
    """One line saying why `policy_name` will be slow here, or None when it is not.

    Only mixed_bfloat16 on a machine without GPU or TPU whose CPU flags are known and lack
    every bfloat16 instruction set gives a line.
    """
    if (policy_name != "mixed_bfloat16" or has_accelerator
            or cpu_computes_bfloat16(flags) is not False):
        return None
    return (f"mixed_bfloat16 on {cpu_name}, which has no bfloat16 instructions "
            f"({' / '.join(BF16_CPU_FLAGS)}) and no GPU: TensorFlow emulates bfloat16 and "
            "a train step runs several times slower than in float32 (LGD-3D R50: 9x). Train "
            "in float32 here (fit_two_stage's mixed_precision = None) or on a GPU or a CPU "
            "with AVX512_BF16 / AMX.")


def policy_warning(policy_name):
    """`slow_policy_warning` for this machine: its GPUs / TPUs and its CPU's flags."""
    accelerators = [d for kind in ("GPU", "TPU") for d in tf.config.list_physical_devices(kind)]
    return slow_policy_warning(policy_name, bool(accelerators), cpu_flags(), cpu_model_name())
