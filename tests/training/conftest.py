"""Fixtures of the training tests: a tiny demo data set and gin/tiny.gin pointed at it."""

import pytest

import gin
from lgd_tf import data

TINY = {"train_per_class": 2, "eval_per_class": 1, "num_shards": 2}


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory):
    """24 train / 12 eval demo videos (2 shards each), built once per test process."""
    cache = tmp_path_factory.mktemp("tiny_demo")
    data.build_demo_dataset(cache, **TINY)
    return cache


@pytest.fixture
def tiny_bindings(tiny_data_dir):
    """gin bindings that point gin/tiny.gin at the tiny data set."""
    return [f"lgd_tf.training.data_sources.demo_cache_dir = '{tiny_data_dir}'"]


@pytest.fixture
def tiny_config(repo_root, tiny_bindings, monkeypatch):
    """Parses gin/tiny.gin (+ the data binding); returns a function taking more bindings."""
    from lgd_tf.cli import configs

    monkeypatch.chdir(repo_root)

    def parse(*bindings):
        configs.parse([str(repo_root / "gin" / "tiny.gin")],
                                tiny_bindings + list(bindings))

    yield parse
    gin.clear_config()
