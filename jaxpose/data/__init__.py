"""Data handling for jaxpose: pure numpy/OpenCV transforms and the input pipeline.

* ``keypoints``: joint names, flip pairs and skeletons of the COCO, MPII and Human3.6M layouts,
  bundled as ``KeypointSet`` (``COCO``, ``MPII``, ``H36M``); which dataset has which is in
  ``jaxpose.datasets``.
* ``transforms``: crop geometry (the originals' ``get_affine_transform``), warping,
  box-to-crop conversion and horizontal flips of keypoints.
* ``targets``: training targets (HRNet/SimpleBaseline Gaussians, MSPN blurred peaks),
  channels-last ``[H, W, K]``.
* ``augment``: the originals' random crop parameters (HRNet/SimpleBaseline and MSPN).
* ``topdown``: per-person instance tables and the training / evaluation sample of one
  instance.
* ``pipeline``: grain over the TFDS ``array_record`` data (shuffling, workers,
  checkpointable iterator state, per-host evaluation batches).
* ``coco_format``: reading, validating and rebuilding COCO keypoint annotations.
* ``synthetic``: the procedural generator behind ``synthetic_people``.
* ``sequences``: the 2D -> 3D lifting pipeline (VideoPose3D's receptive-field windows,
  flips, the checkpointable training stream, whole-sequence and chunked evaluation).
* ``mocap_format``: the example layout of the 3D pose datasets (``h36m_poses``,
  ``synthetic_mocap``) and Human3.6M's naming conventions.
* ``mocap``: procedural 3D human motion on Human3.6M's skeleton (behind
  ``synthetic_mocap``); ``detector_noise``: simulated 2D detections.
* ``safe_npz``: ``.npz`` files with pickled object arrays, read without running pickled code.
* ``builders``: ``build_dataset`` for the TFDS builders of ``data_builders/``.

The transforms are plain numpy/OpenCV so they run in data-loader worker processes and are
testable without TensorFlow or JAX.
"""
