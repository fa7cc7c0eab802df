"""Canary analysis: figures from the model servers' metrics, and the verdict on them."""
