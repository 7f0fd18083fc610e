"""Cameras and quaternions in VideoPose3D's conventions.

``quaternion``: rotations by unit quaternions ``(w, x, y, z)``; ``camera``: world/camera
transforms, the Human3.6M projection with distortion and screen normalisation;
``h36m_cameras``: the published Human3.6M camera parameters.
"""
