"""MPII Human Pose builder (see mpii.py)."""
