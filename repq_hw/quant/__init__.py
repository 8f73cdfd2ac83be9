"""Quantization on the PyTorch side: quantizers, calibration, scale reparameterization."""
