"""The one-line warning for mixed_bfloat16 on a CPU that has no bfloat16 instructions."""

import pytest

from lgd_tf.training import precision

# Excerpts of real /proc/cpuinfo files (one processor each, flags shortened).
ZEN3 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu vme sse sse2 avx fma avx2 bmi2 sha_ni vaes vpclmulqdq rdpid fsrm
"""
SAPPHIRE_RAPIDS = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu avx avx2 avx512f avx512bw avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8
"""
COOPER_LAKE_NO_AMX = """model name\t: Intel(R) Xeon(R) Platinum 8380H
flags\t\t: fpu avx2 avx512f avx512_vnni avx512_bf16
"""
GRAVITON3 = """processor\t: 0
BogoMIPS\t: 2100.00
Features\t: fp asimd aes pmull sha1 sha2 crc32 atomics fphp asimdhp sve svebf16 i8mm bf16 rng
CPU implementer\t: 0x41
"""
GRAVITON2 = """processor\t: 0
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm
"""


def _cpuinfo(tmp_path, text):
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("text, has_bf16", [
    (ZEN3, False), (SAPPHIRE_RAPIDS, True), (COOPER_LAKE_NO_AMX, True), (GRAVITON3, True),
    (GRAVITON2, False)])
def test_bfloat16_instructions_are_read_from_cpuinfo(tmp_path, text, has_bf16):
    flags = precision.cpu_flags(_cpuinfo(tmp_path, text))
    assert precision.cpu_computes_bfloat16(flags) is has_bf16
    warning = precision.slow_policy_warning("mixed_bfloat16", False, flags)
    assert (warning is None) is has_bf16


def test_the_line_names_the_cpu_the_policy_and_what_to_change(tmp_path):
    path = _cpuinfo(tmp_path, ZEN3)
    line = precision.slow_policy_warning("mixed_bfloat16", False, precision.cpu_flags(path),
                                         precision.cpu_model_name(path))
    assert "\n" not in line
    assert line.startswith("mixed_bfloat16 on AMD EPYC 7B13, which has no bfloat16")
    assert "mixed_precision = None" in line and "float32" in line


@pytest.mark.parametrize("policy, has_accelerator", [
    ("float32", False), ("mixed_float16", False), ("mixed_bfloat16", True)])
def test_no_line_for_other_policies_or_with_an_accelerator(tmp_path, policy, has_accelerator):
    flags = precision.cpu_flags(_cpuinfo(tmp_path, ZEN3))
    assert precision.slow_policy_warning(policy, has_accelerator, flags) is None


def test_unknown_flags_give_no_line(tmp_path):
    missing = str(tmp_path / "absent")
    assert precision.cpu_flags(missing) is None
    assert precision.cpu_model_name(missing) == "this CPU"
    assert precision.cpu_flags(_cpuinfo(tmp_path, "processor\t: 0\n")) is None
    assert precision.slow_policy_warning("mixed_bfloat16", False, None) is None
