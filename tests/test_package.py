"""The package skeleton: version, README commands and CI agree with each other."""

import re
import subprocess
import sys

import lgd_tf


def _readme_commands(repo_root):
    readme = (repo_root / "README.md").read_text()
    return re.findall(r"```bash\n(.*?)\n```", readme, flags=re.S)


def test_version_is_semver():
    assert re.fullmatch(r"\d+\.\d+\.\d+", lgd_tf.__version__)


def test_setup_reads_the_package_version(repo_root):
    out = subprocess.run(
        [sys.executable, "setup.py", "--version"],
        cwd=repo_root, capture_output=True, text=True, check=True,
    )
    assert out.stdout.strip().splitlines()[-1] == lgd_tf.__version__


def test_readme_opens_with_the_demo_and_the_test_command(repo_root):
    commands = _readme_commands(repo_root)
    assert len(commands) >= 2
    demo, tests = commands[0], commands[1]
    assert "pip install" in demo and "python -m lgd_tf.train --gin_file=gin/demo.gin" in demo
    assert "pip install" in tests and "scripts/test.sh" in tests


def test_ci_runs_the_readme_test_script(repo_root):
    ci = (repo_root / ".ci" / "run").read_text()
    assert "set -euo pipefail" in ci
    assert "python3 -m venv" in ci
    assert "scripts/test.sh" in ci
    script = (repo_root / "scripts" / "test.sh").read_text()
    assert "ruff check" in script and "pytest" in script
