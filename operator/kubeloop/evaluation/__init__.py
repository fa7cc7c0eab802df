"""Offline evaluation: score a champion and a challenger model directory on the same
labelled data and decide whether the challenger may replace the champion.

``kubeloop evaluate`` (:mod:`kubeloop.evaluation.command`) is the entry point. The
modules import scikit-learn only where they score, so :mod:`kubeloop.evaluation.gate`
(the pure decision) stays cheap to import.
"""

from __future__ import annotations


class EvaluationError(Exception):
    """The evaluation cannot produce a verdict; the message names the file, column,
    model or metric at fault and why."""
