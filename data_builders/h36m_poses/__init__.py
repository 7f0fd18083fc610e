"""Human3.6M poses builder (see h36m_poses.py)."""
