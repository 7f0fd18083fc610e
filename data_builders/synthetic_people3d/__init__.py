"""Synthetic 3D people builder (see synthetic_people3d.py)."""
