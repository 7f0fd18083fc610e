"""Evaluation metrics: Human3.6M (``h36m``), COCO and MPII."""
