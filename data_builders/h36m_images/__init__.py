"""Human3.6M images builder (see h36m_images.py)."""
