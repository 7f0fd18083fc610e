"""Data handling for jaxpose: pure numpy/OpenCV transforms and the input pipeline.

* ``keypoints``: joint names, flip pairs and skeletons of the COCO and MPII layouts.
* ``transforms``: crop geometry (the originals' ``get_affine_transform``), warping,
  box-to-crop conversion and horizontal flips of keypoints.
* ``targets``: training targets (HRNet/SimpleBaseline Gaussians, MSPN blurred peaks),
  channels-last ``[H, W, K]``.

Everything here is plain numpy/OpenCV so it runs in data-loader worker processes and is
testable without TensorFlow or JAX.
"""
