"""Synthetic 3D motion builder (see synthetic_mocap.py)."""
