"""Lowering: quantized model -> pure-integer IR (float scales become integers only in constants.py)."""
