"""lgd_tf: Local and Global Diffusion (LGD) networks for video recognition.

Qiu, Yao, Ngo, Tian, Mei. "Learning Spatio-Temporal Representation with Local and Global
Diffusion." CVPR 2019.

Importing the package registers every Keras layer and model under the `lgd_tf` package, so
`keras.saving.load_model("m.keras")` works after `import lgd_tf`.
"""

__version__ = "0.1.0"

from lgd_tf import layers, models  # noqa: E402,F401  (registers serializables)
