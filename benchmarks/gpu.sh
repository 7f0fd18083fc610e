#!/bin/bash
# The GPU measurements of issue 12, in one run (about 10 minutes on one H100/H200):
#
#   bash benchmarks/gpu.sh [PEAK_BF16_TFLOPS] [PEAK_FP32_TFLOPS] [OUT_DIR]
#
# Forward (benchmarks/inference.py) and train step (benchmarks/train_step.py) of
# SimpleBaseline-50, HRNet-w32, MSPN 2-stage (256x192) and VideoPose3D 243f, float32 and
# bfloat16, batch 32 and 128 per device, with model FLOPs utilisation against the peaks
# given (defaults: an H100/H200 SXM's dense tensor-core peaks, 989 TFLOP/s bf16 and 495
# TFLOP/s tf32, which XLA uses for float32 matmuls and convolutions at default precision).
# No PyTorch peer on a GPU (the peer runs on the CPU). Each table goes to OUT_DIR/*.md.
set -euo pipefail
PEAK_BF16=${1:-989}
PEAK_FP32=${2:-495}
OUT=${3:-/tmp/jaxpose_gpu_bench}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
MODELS=pose_resnet50_256x192,hrnet_w32_256x192,mspn_2stg_256x192,videopose3d_243f
for dtype in float32 bfloat16; do
  peak=$PEAK_FP32; [ "$dtype" = bfloat16 ] && peak=$PEAK_BF16
  python -m benchmarks.inference --device gpu --no_peer --models "$MODELS" --dtype "$dtype" \
      --batch_sizes 32,128 --rounds 3 --per_block 5 --peak_tflops "$peak" \
      | tee "$OUT/inference_$dtype.md"
  for batch in 32 128; do
    python -m benchmarks.train_step --device gpu --no_peer --dtypes "$dtype" \
        --configs simplebaseline_coco,hrnet_coco,mspn_coco --batch_per_device "$batch" \
        --rounds 3 --per_block 5 --peak_tflops "$peak" | tee "$OUT/train_${dtype}_b$batch.md"
    python -m benchmarks.train_step --device gpu --no_peer --dtypes "$dtype" \
        --configs videopose3d_h36m --windows_per_device "$batch" \
        --rounds 3 --per_block 5 --peak_tflops "$peak" | tee "$OUT/train_vp3d_${dtype}_b$batch.md"
  done
done
