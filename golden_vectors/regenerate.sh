#!/usr/bin/env bash
# Regenerate the committed golden sets from scratch: calibrate vit_digits (RepQ-ViT, seed 0, 32 images),
# lower it at W4A4 and W8A8, run the emulator on the first 2 digits test images, write both sets and
# SHA256SUMS. Equivalent, per set (see repq_hw/golden/model.py COMMITTED_SETS):
#   repq-hw golden --model vit_digits --bits 4 --images 2 --seed 0 --ops 'blocks.0.*' --ops 'head*' --ops 'norm' \
#     --op-type gemm --op-type bmm_qk --op-type softmax --op-type log2_code --op-type attn_v_shift \
#     --op-type layernorm --op-type lut --op-type requantize --op-type add \
#     --exclude 'blocks.0.attn.[qkv]' --exclude 'blocks.0.attn.proj_in' \
#     --formats hex --const-formats hex,coe,mif --rom-max-words 1024 --out golden_vectors/vit_digits.w4a4.seed0
# Check without rewriting (rebuild from the stored IR, compare bytes):  repq-hw golden committed --check
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/repq-hw golden committed --force "$@"
