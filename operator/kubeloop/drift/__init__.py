"""Drift statistics, reference profiles and live sources."""
