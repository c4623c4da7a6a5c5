"""Experiments: the `gavel` CLI, the runner, MLflow tracking and metrics."""
