"""TFDS dataset builders of jaxpose, one folder per dataset (TFDS layout).

* ``coco_keypoints``: COCO 2017 person keypoints from a manual download.
* ``mpii``: MPII Human Pose (HRNet/MSPN JSON annotations) from a manual download.
* ``synthetic_people``: procedurally generated COCO-format people; no download.

Build with ``tfds build data_builders/<name>`` (from the repository root; with
``--beam_pipeline_options=...`` the images are read in an Apache Beam pipeline) or
``jaxpose.data.builders.build_dataset(name, data_dir, ...)``. All write ``array_record``
files for random access (``tfds.data_sources`` / grain). Nothing is imported here so that
importing the package stays cheap.
"""
