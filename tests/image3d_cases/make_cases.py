"""Runs the ORIGINAL integral-human-pose and pytorch-pose-hg-3d functions on small cases and
stores inputs + outputs as json + npz (the image3d fixtures of jaxpose's tests)."""
import json
import os
import pickle
import sys
import types

import cv2
import numpy as np

np.float = float  # the originals predate numpy 1.24
np.int = int
ROOT = "/tmp/orig"
sys.path[:0] = [f"{ROOT}/site", f"{ROOT}/integral", f"{ROOT}/integral/pytorch_projects",
                f"{ROOT}/hg3d/src/lib"]

from common.utility import image_processing_cv as ipc  # noqa: E402
from common.utility import utils as iutils  # noqa: E402
from common_pytorch.loss.integral import generate_joint_location_label  # noqa: E402
from common_pytorch.dataset import hm36 as hm36mod  # noqa: E402
from common_pytorch.dataset import hm36_eccv_challenge as chmod  # noqa: E402
from easydict import EasyDict as edict  # noqa: E402

OUT = sys.argv[1]
os.makedirs(OUT, exist_ok=True)
rs = np.random.RandomState(0)
MEAN = [123.675, 116.280, 103.530]
STD = [58.395, 57.120, 57.375]


def smooth_image(h, w, seed):
  r = np.random.RandomState(seed)
  small = r.randint(0, 256, (h // 8 + 2, w // 8 + 2, 3)).astype(np.uint8)
  img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
  noise = r.randint(0, 40, (h, w, 3)).astype(np.uint8)
  return np.clip(img.astype(int) + noise, 0, 255).astype(np.uint8)


def save(name, meta, arrays):
  np.savez_compressed(os.path.join(OUT, f"{name}.npz"), **arrays)
  with open(os.path.join(OUT, f"{name}.json"), "w") as f:
    json.dump(meta, f, indent=1)


# ---------------------------------------------------------------------------------------
# integral: gen_trans_from_patch_cv, get_single_patch_sample, calc_kpt_bound_pad
# ---------------------------------------------------------------------------------------
arrays = {}
cases = [(60.5, 40.25, 80.0, 90.0, 64, 64, 1.0, 0.0, False),
         (100.0, 120.0, 150.0, 150.0, 32, 48, 1.25, 30.0, False),
         (33.3, 77.7, 50.0, 60.0, 48, 64, 0.8, -45.5, True),
         (12.0, 8.0, 20.0, 20.0, 256, 256, 1.1, 170.0, True)]
for i, (cx, cy, w, h, pw, ph, s, r, inv) in enumerate(cases):
  arrays[f"case{i}_args"] = np.array([cx, cy, w, h, pw, ph, s, r, float(inv)])
  arrays[f"case{i}_trans"] = ipc.gen_trans_from_patch_cv(cx, cy, w, h, pw, ph, s, r, inv=inv)
save("integral_patch_transform", {
    "file": "common/utility/image_processing_cv.py", "function": "gen_trans_from_patch_cv",
    "cases": len(cases),
    "arrays": {"args": "c_x, c_y, src_width, src_height, dst_width, dst_height, scale, rot (deg), inv",
               "trans": "the [2, 3] affine matrix"}}, arrays)

arrays = {}
img = smooth_image(96, 112, 1)
img_path = f"{ROOT}/patch_img.png"
cv2.imwrite(img_path, img)
# hm36-like joints: 18 joints inside/around the image, depth mm relative to the root.
base_joints = np.zeros((18, 3))
base_joints[:, 0] = rs.uniform(20, 92, 18)
base_joints[:, 1] = rs.uniform(10, 86, 18)
base_joints[:, 2] = rs.uniform(-300, 300, 18)
base_joints[0, 2] = 0
sample_cases = [
    # (aug: scale, rot, flip, color), depth_in_image, z visible, box (cx, cy, w, h), patch
    ((1.0, 0.0, False, (1.0, 1.0, 1.0)), False, True, (56.0, 48.0, 70.0, 70.0), (64, 64)),
    ((1.2, 20.0, True, (0.9, 1.1, 1.05)), False, True, (50.5, 45.0, 80.0, 80.0), (64, 64)),
    ((0.8, -35.0, False, (1.15, 0.85, 1.0)), True, True, (60.0, 50.0, 60.0, 80.0), (48, 64)),
    ((1.1, 10.0, True, (1.0, 0.95, 1.2)), True, False, (58.0, 44.0, 90.0, 90.0), (32, 32)),
]
for i, (aug, depth_in_image, zvis, box, (pw, ph)) in enumerate(sample_cases):
  joints = base_joints.copy()
  if depth_in_image:
    joints[:, 2] = joints[:, 2] / 2000.0 * box[2]  # depth already in image pixels
  vis = np.ones((18, 3))
  if not zvis:  # a 2D (MPII-like) sample: no depth, two unlabelled joints
    joints[:, 2] = 0
    vis[:, 2] = 0
    vis[[7, 9]] = 0
    joints[[7, 9]] = 0
  ipc.do_augmentation = lambda cfg, aug=aug: (aug[0], aug[1], aug[2], list(aug[3]))
  patch, label, weight = ipc.get_single_patch_sample(
      img_path, box[0], box[1], box[2], box[3], joints.copy(), vis.copy(),
      hm36mod.s_36_flip_pairs.copy(), hm36mod.s_36_parent_ids.copy(), pw, ph, 2000, 2000,
      MEAN, STD, True, edict(), generate_joint_location_label, edict(),
      depth_in_image=depth_in_image)
  arrays[f"case{i}_joints"] = joints
  arrays[f"case{i}_joints_vis"] = vis
  arrays[f"case{i}_box"] = np.array(box)
  arrays[f"case{i}_patch_size"] = np.array([pw, ph])
  arrays[f"case{i}_aug"] = np.array([aug[0], aug[1], float(aug[2]), *aug[3]])
  arrays[f"case{i}_depth_in_image"] = np.array(depth_in_image)
  arrays[f"case{i}_patch"] = patch
  arrays[f"case{i}_label"] = label
  arrays[f"case{i}_label_weight"] = weight
arrays["image"] = img
save("integral_patch_sample", {
    "file": "common/utility/image_processing_cv.py + common_pytorch/loss/integral.py",
    "function": "get_single_patch_sample (do_augmentation replaced by the fixed draw in aug; "
                "label_func generate_joint_location_label; rect_3d 2000 x 2000; mean/std of "
                "the hm36 yamls; flip pairs s_36_flip_pairs)",
    "cases": len(sample_cases),
    "arrays": {"image": "BGR uint8 [96, 112, 3] read with cv2.imread from a PNG",
               "joints": "[18, 3] image x, y and depth (mm relative to the root, or image "
                         "pixels when depth_in_image)",
               "joints_vis": "[18, 3]", "box": "center_x, center_y, width, height",
               "patch_size": "patch width, height",
               "aug": "scale, rot (deg), flip, color gains R, G, B",
               "depth_in_image": "the challenge rule (depth / (width * scale)) instead of "
                                 "depth / (2000 * scale)",
               "patch": "[3, ph, pw] float32 RGB patch, colour-scaled, clipped, normalised",
               "label": "[54] generate_joint_location_label", "label_weight": "[54]"}}, arrays)

arrays = {}
for i, aspect in enumerate((1.0, 0.75, 1.5)):
  kpts = rs.uniform(0, 200, (18, 2))
  vis = np.ones((18, 3))
  vis[rs.rand(18) < 0.2] = 0
  cx, cy, w, h = iutils.calc_kpt_bound_pad(kpts, vis, aspect)
  arrays[f"case{i}_kpts"] = kpts
  arrays[f"case{i}_vis"] = vis
  arrays[f"case{i}_aspect"] = np.array(aspect)
  arrays[f"case{i}_box"] = np.array([cx, cy, w, h])
save("integral_joint_box", {"file": "common/utility/utils.py", "function": "calc_kpt_bound_pad",
                            "cases": 3, "arrays": {"kpts": "[18, 2]", "vis": "[18, 3]",
                                                   "aspect": "w / h",
                                                   "box": "c_x, c_y, w, h"}}, arrays)

# ---------------------------------------------------------------------------------------
# integral: Human3.6M protocol (hm36.evaluate after evalNet) and the challenge protocol
# ---------------------------------------------------------------------------------------
arrays = {}
n = 4
gt_db = []
world = rs.uniform(-800, 800, (n, 18, 3)) + np.array([0, 0, 0])
world[:, 17] = (world[:, 11] + world[:, 14]) / 2
rot = cv2.Rodrigues(np.array([0.2, -0.3, 0.1]))[0]
trans = np.array([100.0, -200.0, -4500.0])
fl = np.array([1145.0, 1143.8])
c_p = np.array([512.5, 515.4])
for k in range(n):
  rect_l, rect_r, rect_t, rect_b, pt_2d, pt_3d, vis, pelvis = hm36mod.from_worldjt_to_imagejt(
      k, 18, rot, world, trans, fl, c_p, 2000, 2000)
  gt_db.append({"center_x": (rect_l + rect_r) * 0.5, "center_y": (rect_t + rect_b) * 0.5,
                "width": rect_r - rect_l, "height": rect_b - rect_t, "joints_3d": pt_2d,
                "joints_3d_vis": vis, "joints_3d_cam": pt_3d, "pelvis": pelvis,
                "fl": fl, "c_p": c_p})
pw = ph = 64
pred_patch = np.zeros((n, 18, 4))
for k, g in enumerate(gt_db):  # the true pose in the patch, perturbed
  t = ipc.gen_trans_from_patch_cv(g["center_x"], g["center_y"], g["width"], g["height"], pw, ph,
                                  1.0, 0.0)
  for j in range(18):
    pred_patch[k, j, :2] = ipc.trans_point2d(g["joints_3d"][j, :2], t)
  pred_patch[k, :, 2] = g["joints_3d"][:, 2] / 2000.0 * pw
pred_patch[:, :, :3] += rs.normal(0, 1.5, (n, 18, 3))
pred_patch[:, :, 3] = 1
imdb = hm36mod.hm36.__new__(hm36mod.hm36)
imdb.joint_num, imdb.parent_ids, imdb.flip_pairs = 18, hm36mod.s_36_parent_ids, hm36mod.s_36_flip_pairs
imdb.gt_db = lambda: gt_db
preds_img = np.stack([ipc.trans_coords_from_patch_to_org_3d(
    pred_patch[k], g["center_x"], g["center_y"], g["width"], g["height"], pw, ph, 2000, 2000)
    for k, g in enumerate(gt_db)])
name_value = dict(imdb.evaluate(preds_img.copy(), ""))
arrays["case0_pred_patch"] = pred_patch
arrays["case0_box"] = np.array([[g["center_x"], g["center_y"], g["width"], g["height"]] for g in gt_db])
arrays["case0_joints_3d_cam"] = np.stack([g["joints_3d_cam"] for g in gt_db])
arrays["case0_pelvis"] = np.stack([g["pelvis"] for g in gt_db])
arrays["case0_camera"] = np.concatenate([fl, c_p])
arrays["case0_mpjpe"] = np.array(name_value["hm36_17j      :"])
arrays["case0_mpjpe_align"] = np.array(name_value["hm36_17j_align:"])
# Challenge protocol: rescale_pose_from_patch_to_camera + hm36_eccv_challenge.evaluate.
gt_rel = rs.uniform(-700, 700, (n, 18, 3))
gt_rel[:, 0] = 0
gt_rel[:, 17] = (gt_rel[:, 11] + gt_rel[:, 14]) / 2
patch2 = rs.uniform(0, 64, (n, 18, 3))
rescaled = np.stack([ipc.rescale_pose_from_patch_to_camera(p, 4502.881, hm36mod.s_36_parent_ids)
                     for p in patch2])
ch = chmod.hm36_eccv_challenge.__new__(chmod.hm36_eccv_challenge)
ch.joint_num, ch.image_set_name = 18, "Val"
ch.jnt_bbox_db = lambda: [{"joints_3d_relative": g} for g in gt_rel]
name_value2 = dict(ch.evaluate(rescaled.copy(), ""))
arrays["case1_pred_patch"] = patch2
arrays["case1_gt_relative"] = gt_rel
arrays["case1_rescaled"] = rescaled
arrays["case1_mpjpe"] = np.array(name_value2["hm36_17j      :"])
arrays["case1_mpjpe_align"] = np.array(name_value2["hm36_17j_align:"])
save("integral_protocols", {
    "file": "common_pytorch/net_modules.py, dataset/hm36.py, dataset/hm36_eccv_challenge.py, "
            "common/utility/image_processing_cv.py",
    "function": "case 0: evalNet (trans_coords_from_patch_to_org_3d, rect 2000) + hm36.evaluate "
                "on a gt_db made by from_worldjt_to_imagejt; case 1: evalNetChallenge "
                "(rescale_pose_from_patch_to_camera, 4502.881) + hm36_eccv_challenge.evaluate",
    "cases": 2,
    "arrays": {"pred_patch": "[N, 18, 3 or 4] u, v, z in patch pixels (64 x 64 patches)",
               "box": "[N, 4] center_x, center_y, width, height (the 2000 mm rect)",
               "joints_3d_cam": "[N, 18, 3] camera mm", "pelvis": "[N, 3] mm",
               "camera": "fx, fy, cx, cy", "gt_relative": "[N, 18, 3] mm",
               "rescaled": "[N, 18, 3] rescale_pose_from_patch_to_camera",
               "mpjpe": "hm36_17j", "mpjpe_align": "hm36_17j_align"}}, arrays)

# ---------------------------------------------------------------------------------------
# pytorch-pose-hg-3d: H36M / MPII / Fusion3D samples, convert_eval_format + mpjpe
# ---------------------------------------------------------------------------------------
import datasets.h36m as h36m_ds  # noqa: E402
import datasets.mpii as mpii_ds  # noqa: E402
import datasets.fusion_3d as fusion_ds  # noqa: E402
from utils import eval as hg_eval  # noqa: E402

data_dir = f"{ROOT}/hg3d_data"
for split in ("Train", "Val"):
  os.makedirs(f"{data_dir}/h36m/ECCV18_Challenge/{split}/IMG", exist_ok=True)
  os.makedirs(f"{data_dir}/h36m/msra_cache/HM36_eccv_challenge_{split}_cache", exist_ok=True)
os.makedirs(f"{data_dir}/mpii/annot", exist_ok=True)
os.makedirs(f"{data_dir}/mpii/images", exist_ok=True)
arrays = {}
db = []
for k in range(3):
  image = smooth_image(120, 100, 10 + k)
  ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
  for split in ("Train", "Val"):
    open(f"{data_dir}/h36m/ECCV18_Challenge/{split}/IMG/{k + 1:05d}.jpg", "wb").write(jpeg.tobytes())
  arrays[f"jpeg{k}"] = np.frombuffer(jpeg.tobytes(), np.uint8)
  joints = np.zeros((18, 3))
  joints[:, 0] = rs.uniform(15, 85, 18)
  joints[:, 1] = rs.uniform(10, 110, 18)
  joints[:, 2] = rs.uniform(-40, 40, 18)
  joints[0, 2] = 0
  rel = rs.uniform(-600, 600, (18, 3))
  rel[0] = 0
  db.append({"joints_3d": joints, "joints_3d_relative": rel, "center_x": 50.0 + k,
             "center_y": 60.0 - k, "width": 70.0 + 5 * k, "height": 95.0 - 3 * k})
  arrays[f"db{k}_joints_3d"] = joints
  arrays[f"db{k}_joints_3d_relative"] = rel
  arrays[f"db{k}_box"] = np.array([db[-1]["center_x"], db[-1]["center_y"], db[-1]["width"],
                                   db[-1]["height"]])
for split in ("Train", "Val"):
  pickle.dump(db, open(f"{data_dir}/h36m/msra_cache/HM36_eccv_challenge_{split}_cache/"
                       f"HM36_eccv_challenge_{split}_w288xh384_keypoint_jnt_bbox_db.pkl", "wb"))
mpii = []
for k in range(2):
  image = smooth_image(110, 130, 20 + k)
  ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
  open(f"{data_dir}/mpii/images/m{k}.jpg", "wb").write(jpeg.tobytes())
  arrays[f"mpii_jpeg{k}"] = np.frombuffer(jpeg.tobytes(), np.uint8)
  joints = rs.uniform(5, 100, (16, 2)).round(1)
  vis = np.ones(16)
  joints[3] = -1  # an unlabelled joint (the files' convention)
  vis[3] = 0
  joints[12] = [125.0, 3.0]  # near the border: outside the crop after some draws
  mpii.append({"image": f"m{k}.jpg", "joints": joints.tolist(), "joints_vis": vis.tolist(),
               "center": [60.0 + 3 * k, 45.0], "scale": 0.35 + 0.05 * k})
  arrays[f"mpii{k}_joints"] = joints
  arrays[f"mpii{k}_joints_vis"] = vis
  arrays[f"mpii{k}_center"] = np.array(mpii[-1]["center"])
  arrays[f"mpii{k}_scale"] = np.array(mpii[-1]["scale"])
for split in ("train", "val"):
  json.dump(mpii, open(f"{data_dir}/mpii/annot/{split}.json", "w"))

opt = types.SimpleNamespace(data_dir=data_dir, input_h=64, input_w=64, output_h=16, output_w=16,
                            full_test=True, scale=0.25, rotate=30, flip=0.5, hm_gauss=2,
                            fit_short_side=False)


class FixedRandom:
  """Stands in for np.random inside the datasets: returns the listed draws in order."""

  def __init__(self, draws):
    self.draws = list(draws)

  def randn(self):
    return self.draws.pop(0)

  def random(self):
    return self.draws.pop(0)

  def choice(self, n, size, replace=False):
    return np.arange(n)


def run(module, draws, fn):
  real = module.np.random
  module.np.random = FixedRandom(draws)
  try:
    return fn()
  finally:
    module.np.random = real


def store(prefix, ret):
  arrays[f"{prefix}_input"] = ret["input"]
  arrays[f"{prefix}_target"] = ret["target"]
  arrays[f"{prefix}_reg_target"] = ret["reg_target"]
  arrays[f"{prefix}_reg_ind"] = ret["reg_ind"]
  arrays[f"{prefix}_reg_mask"] = ret["reg_mask"]
  arrays[f"{prefix}_pts_crop"] = ret["meta"]["pts_crop"]


h36m_cases = []
val = h36m_ds.H36M(opt, "val")
store("h36m0", val[1])  # evaluation: no augmentation
h36m_cases.append(("val", 1, []))
train = h36m_ds.H36M(opt, "train")
train.idxs = np.arange(3)
for c, (index, draws) in enumerate([(1, [0.8, 0.3]), (2, [-0.6, 0.9])]):
  # draws: randn (scale), random (flip < 0.5)
  store(f"h36m{c + 1}", run(h36m_ds, draws, lambda index=index: train[index]))
  h36m_cases.append(("train", index, draws))
fusion = fusion_ds.Fusion3D(opt, "train")
fusion.dataset3D.idxs = np.arange(3)
mpii_cases = []
for c, (index, draws) in enumerate([(0, [0.5, 0.3, -0.7, 0.2]), (1, [-0.2, 0.9, 0.7]),
                                    (0, [1.5, 0.1, 2.5, 0.9])]):
  # draws: randn (scale), random (rotate? <= 0.6), [randn (rotation)], random (flip < 0.5)
  store(f"mpii{c}", run(mpii_ds, draws, lambda index=index: fusion[fusion.nImages3D + index]))
  mpii_cases.append((index, draws))
# convert_eval_format + mpjpe on random maps.
hm = rs.rand(3, 16, 16, 16).astype(np.float32)
depth = rs.randn(3, 16, 16, 16).astype(np.float32)
gt_3d = rs.uniform(-500, 500, (3, 17, 3)).astype(np.float32)
gt_3d[:, 0] = 0
err, cnt = hg_eval.mpjpe(hm, depth, gt_3d, val.convert_eval_format)
arrays["eval_heatmap"] = hm
arrays["eval_depth"] = depth
arrays["eval_gt_3d"] = gt_3d
arrays["eval_converted"] = np.stack([val.convert_eval_format(p) for p in hg_eval.get_preds_3d(hm, depth)])
arrays["eval_mpjpe"] = np.array(err)
save("hg3d_samples", {
    "file": "src/lib/datasets/{h36m,mpii,fusion_3d}.py, src/lib/utils/eval.py",
    "function": "H36M.__getitem__ (h36m0: split val; h36m1-2: split train with fixed draws), "
                "Fusion3D.__getitem__ 2D branch (MPII.__getitem__) with fixed draws, "
                "convert_eval_format + mpjpe",
    "opt": {"input": 64, "output": 16, "scale": 0.25, "rotate": 30, "flip": 0.5, "hm_gauss": 2},
    "h36m_cases": h36m_cases, "mpii_cases": mpii_cases,
    "arrays": {"jpeg{k}": "the challenge image k+1 (JPEG bytes)",
               "db{k}_*": "entry k of the jnt_bbox_db pickle (box: center_x, center_y, width, height)",
               "mpii_jpeg{k}, mpii{k}_*": "MPII person k (1-based JSON values)",
               "<case>_input": "[3, 64, 64] (x / 256 - mean) / std of the BGR crop",
               "<case>_target": "[16, 16, 16] heatmaps", "<case>_reg_*": "depth targets",
               "<case>_pts_crop": "[16, 2] int32 output cells",
               "eval_*": "heatmaps / depth maps [B, 16, 16, 16], gt_3d [B, 17, 3] mm, "
                         "convert_eval_format of get_preds_3d, mpjpe"}}, arrays)
print("done")
