"""Executors of the integer IR."""
