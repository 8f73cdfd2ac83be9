"""repq-hw: RepQ-ViT post-training quantization of timm vision transformers, lowered to a
bit-exact integer IR for hardware (emulator, golden vectors, cost model)."""

__version__ = "0.1.0"
