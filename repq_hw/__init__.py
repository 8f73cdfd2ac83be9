"""repq-hw: RepQ-ViT post-training quantization of timm vision transformers, lowered to a
bit-exact integer IR for hardware (emulator, golden vectors, cost model)."""

__version__ = "0.1.0"

# Reproducible float mode (on unless REPQ_HW_FAST_FLOAT=1): pin torch's CPU float code paths to AVX2
# before torch initialises, so that calibration gives the same bits on every x86-64 CPU (float_env.py).
from repq_hw import float_env as _float_env  # noqa: E402

_float_env.pin_before_torch()
