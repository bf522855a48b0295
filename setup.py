"""Packaging for lgd_tf: Local and Global Diffusion networks for video recognition."""

import pathlib

import setuptools

HERE = pathlib.Path(__file__).parent
# Package data: gin/*.gin -> lgd_tf/gin/*.gin, gin/base/*.gin -> lgd_tf/gin/base/*.gin.
GIN_PACKAGES = ["lgd_tf.gin", "lgd_tf.gin.base"]


def read_version():
    for line in (HERE / "lgd_tf" / "__init__.py").read_text().splitlines():
        if line.startswith("__version__"):
            return line.split("=")[1].strip().strip('"')
    raise RuntimeError("lgd_tf/__init__.py has no __version__ line")


setuptools.setup(
    name="lgd_tf",
    version=read_version(),
    description=(
        "Local and Global Diffusion (LGD) networks for video recognition "
        "in TensorFlow / Keras 3 (Qiu et al., CVPR 2019)."
    ),
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    # The gin configs stay at the top of the repository (gin/) and ship inside the package
    # as lgd_tf/gin (lgd_tf/cli/configs.py looks there first, then at the checkout's gin/).
    packages=setuptools.find_packages(include=["lgd_tf", "lgd_tf.*", "lgd_io", "lgd_io.*"])
    + GIN_PACKAGES,
    package_dir={"lgd_tf.gin": "gin"},
    package_data={name: ["*.gin"] for name in GIN_PACKAGES},
    install_requires=[
        # TensorFlow itself comes from an extra: `cpu` or `gpu` (see README).
        "keras>=3.10",
        "gin-config>=0.5.0",
        "absl-py>=2.1",
        "numpy>=1.26",
        "av>=14.0",
        "opencv-contrib-python-headless>=4.10",
        "scikit-learn>=1.5",
        "matplotlib>=3.8",  # the confusion-matrix figure
        "tensorboard>=2.20",  # tf.summary.scalar / image (TensorFlow 2.21 does not require it)
        # lgd_io.records / lgd_io.tfrecord: the data build writes SequenceExamples and TFRecord
        # files without TensorFlow. protobuf: TensorFlow 2.21's own range (Beam 2.77 caps it
        # below 7, so with [beam] pip resolves 6.31.1 to 6.x).
        "protobuf>=6.31.1,<8",
        "google-crc32c>=1.5",
    ],
    extras_require={
        "cpu": ["tensorflow-cpu>=2.21.0"],
        "gpu": ["tensorflow[and-cuda]>=2.21.0"],
        "tpu": ["tensorflow>=2.21.0"],
        # lgd_tf.layers / lgd_tf.models on JAX (no TensorFlow needed; README "JAX and PyTorch").
        "jax": ["jax>=0.4.34"],
        # --format=litert / onnx of lgd_tf.export (docs/export_formats.md).
        "export": ["ai-edge-litert>=2.0", "tf2onnx>=1.17", "onnxruntime>=1.20"],
        # `lgd_tf.build_tfrecords --runner=beam` (tfrecords/README.md, "Apache Beam").
        "beam": ["apache-beam[tfrecord]>=2.77", "google-crc32c>=1.5"],
        "test": [
            "jax>=0.4.34",  # the layer and model tests under KERAS_BACKEND=jax (CPU)
            "ai-edge-litert>=2.0",  # tests/export/test_litert_onnx.py
            "onnxruntime>=1.20",
            "tf2onnx>=1.17",
            "pillow>=10.0",
            "pytest>=8.0",
            "pytest-xdist>=3.5",
            "ruff>=0.6",
        ],
    },
    entry_points={
        "console_scripts": [
            "lgd-train=lgd_tf.train:run",
            "lgd-evaluate=lgd_tf.evaluate:run",
            "lgd-export=lgd_tf.export:run",
            "lgd-predict=lgd_tf.predict:run",
            "lgd-explain=lgd_tf.explain:run",
            "lgd-build-tfrecords=lgd_tf.build_tfrecords:run",
        ]
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
