"""Backbones, heads and builders of LGD-3D and LGD-2D (Sec. 4, Table 1)."""
