"""TFDS dataset builders of jaxpose, one folder per dataset (TFDS layout).

* ``coco_keypoints``: COCO 2017 person keypoints from a manual download.
* ``mpii``: MPII Human Pose (HRNet/MSPN JSON annotations) from a manual download.
* ``synthetic_people``: procedurally generated COCO-format people; no download.
* ``h36m_poses``: Human3.6M 3D poses and 2D keypoints from VideoPose3D's prepared files.
* ``synthetic_mocap``: procedural 3D motion seen by the Human3.6M cameras; no download.
* ``h36m_images``: Human3.6M images with 2D/3D joints (ECCV'18 challenge files or
  integral-human-pose's cache) from a manual download.
* ``synthetic_people3d``: procedural people posed in 3D and photographed; no download.

Build with ``tfds build data_builders/<name>`` (from the repository root; with
``--beam_pipeline_options=...`` the images are read in an Apache Beam pipeline) or
``jaxpose.data.builders.build_dataset(name, data_dir, ...)``. All write ``array_record``
files for random access (``tfds.data_sources`` / grain). Nothing is imported here so that
importing the package stays cheap.
"""
