"""Shared pytest set-up: quiet TensorFlow logs, deterministic seeds, repo paths."""

import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture
def repo_root():
    return REPO_ROOT


@pytest.fixture
def subprocess_env():
    """Environment for `python -m lgd_tf...` subprocesses run from the repo root."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in [str(REPO_ROOT), env.get("PYTHONPATH", "")] if p
    )
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return env
