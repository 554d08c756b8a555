"""Tracking: bench results sent to an experiment tracker (MLflow) — a parent run per bench, a nested run per variant."""
from optikit.tracking.mlflow import TrackingConfig, track, variant_metrics

__all__ = ["TrackingConfig", "track", "variant_metrics"]
