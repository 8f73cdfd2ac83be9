"""Model registry, bundled real-data models and their training script."""
