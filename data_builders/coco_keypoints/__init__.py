"""COCO 2017 person keypoints builder (see coco_keypoints.py)."""
