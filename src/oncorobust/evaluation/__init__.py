"""Evaluation stage: attack evaluation, health checks, sensitivity, robustness, deferral, statistics."""
