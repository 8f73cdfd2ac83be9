"""Input data for calibration and evaluation (bundled real data sets and loaders)."""
