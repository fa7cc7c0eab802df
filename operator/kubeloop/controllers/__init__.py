"""Kopf wiring and one level-based reconcile per kind."""
