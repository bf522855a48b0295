"""Keras layers of LGD networks: LGD block (Eq. 2-3, 8, 9), residual units, Tensor Sketch."""
