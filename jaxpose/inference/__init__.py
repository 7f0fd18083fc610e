"""Inference on users' files: models from any checkpoint, 2D poses, lifting, export.

Python API::

    from jaxpose import inference
    loaded = inference.load_model("runs/quickstart")          # or a .pth + config=...
    predictor = inference.PosePredictor(loaded)
    poses = predictor(image_bgr, boxes)                        # keypoints [P, K, 2] pixels
    result = inference.run(["photos/", "clip.mp4"], loaded, "out",
                           options=inference.Options(boxes="whole", draw=True))

Modules: ``loading`` (``load_model``: the one entry point from a workdir, converted
directory or original file to an eval-mode model), ``pose2d`` (crops -> task predict ->
decode), ``boxes`` (box files, whole image, detectors), ``tracking`` (IoU tracks),
``media`` (inputs, images, videos), ``lifting`` (2D -> 3D), ``runner`` (``jaxpose
predict``), ``export`` (StableHLO, SavedModel).
"""
from jaxpose.inference.loading import LoadedModel, ModelSpecError, load_config, load_model
from jaxpose.inference.pose2d import PosePredictor, Poses
from jaxpose.inference.runner import Options, Result, run

__all__ = ["LoadedModel", "ModelSpecError", "Options", "PosePredictor", "Poses", "Result",
           "load_config", "load_model", "run"]
