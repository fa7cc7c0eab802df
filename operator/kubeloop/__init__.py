"""Kubeloop: train, serve, watch for drift and retrain ML models inside Kubernetes."""

__version__ = "0.1.0"
