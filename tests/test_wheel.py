"""The wheel: it ships the gin configs as lgd_tf/gin and the commands, and once installed it runs
the tiny demo from any directory with the bare name `tiny.gin` (no checkout on the path)."""

import os
import shutil
import subprocess
import sys
import zipfile

import pytest

# Not copied into the build folder: version control, build outputs, caches, runs.
_SKIP_ANYWHERE = {".git", "__pycache__", ".pytest_cache", ".ruff_cache"}
_SKIP_AT_TOP = {"build", "dist", "runs", "exports", "data", "venv", ".venv"}


def _source_copy(repo_root, dest):
    """The checkout without build outputs, so the wheel holds no stale `build/` file and the
    build writes nothing into the checkout (others may be building or testing in it)."""

    def ignore(folder, names):
        top = os.path.samefile(folder, repo_root)
        return {n for n in names if n in _SKIP_ANYWHERE or n.endswith(".egg-info")
                or (top and n in _SKIP_AT_TOP)}

    shutil.copytree(repo_root, dest, ignore=ignore)
    return dest


def _run(args, timeout, **kwargs):
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kwargs)
    assert result.returncode == 0, (args, result.stdout[-3000:], result.stderr[-3000:])
    return result


@pytest.mark.slow
@pytest.mark.subprocess
def test_installed_wheel_runs_the_demo_from_any_directory(repo_root, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1", TF_CPP_MIN_LOG_LEVEL="2")
    src = _source_copy(repo_root, tmp_path / "src")
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w",
          str(wheels), "."], 120, cwd=src, env=env)
    (wheel,) = wheels.glob("lgd_tf-*.whl")

    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        scripts = archive.read(entry_points).decode()
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        requires = archive.read(metadata).decode()
    for name in ("lgd_tf/gin/tiny.gin", "lgd_tf/gin/demo.gin", "lgd_tf/gin/base/lgd3d.gin",
                 "lgd_tf/build_tfrecords.py", "lgd_tf/train.py"):
        assert name in names, name
    cli = {os.path.basename(p) for p in (repo_root / "lgd_tf" / "cli").glob("*.py")}
    assert cli and {n for n in cli if f"lgd_tf/cli/{n}" not in names} == set()
    shipped = {p.name for p in (repo_root / "gin").glob("*.gin")}
    assert {n for n in shipped if f"lgd_tf/gin/{n}" not in names} == set()
    for script in ("lgd-train = lgd_tf.train:run", "lgd-evaluate = lgd_tf.evaluate:run",
                   "lgd-export = lgd_tf.export:run", "lgd-predict = lgd_tf.predict:run",
                   "lgd-build-tfrecords = lgd_tf.build_tfrecords:run"):
        assert script in scripts, scripts
    assert "Requires-Dist: matplotlib" in requires and "Requires-Dist: tensorboard" in requires

    target = tmp_path / "installed"
    _run([sys.executable, "-m", "pip", "install", "--no-deps", f"--target={target}",
          str(wheel)], 120, env=env)
    elsewhere = tmp_path / "elsewhere"  # not the checkout: its gin/ and lgd_tf/ are not here
    elsewhere.mkdir()
    env["PYTHONPATH"] = str(target)
    found = _run([sys.executable, "-c", "import importlib.util as u; "
                  "print(u.find_spec('lgd_tf').origin)"], 60, cwd=elsewhere, env=env)
    assert found.stdout.strip().startswith(str(target)), found.stdout  # lgd_tf.__file__

    help_ = _run([sys.executable, "-m", "lgd_tf.build_tfrecords", "--help"], 120,
                 cwd=elsewhere, env=env)
    assert "--videos_dir" in help_.stdout

    model_dir = elsewhere / "M"
    cache = tmp_path / "demo_cache"
    _run([sys.executable, "-m", "lgd_tf.train", "--gin_file=tiny.gin",
          f"--model_dir={model_dir}", "--noevaluate",
          f"--gin_bindings=lgd_tf.training.data_sources.demo_cache_dir='{cache}'"], 300,
         cwd=elsewhere, env=env)
    assert (model_dir / "stage2.keras").is_file()
