"""The operator's Prometheus metrics (served on `/metrics` by `kubeloop run`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECONCILES = Counter(
    "kubeloop_reconcile_total",
    "Reconciles by kind and result (success, error, invalid).",
    ["kind", "result"],
)
RECONCILE_DURATION = Histogram(
    "kubeloop_reconcile_duration_seconds",
    "Time spent in one reconcile, by kind.",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
QUEUE_DEPTH = Gauge("kubeloop_workqueue_depth", "Objects waiting for a reconcile.")
API_REQUESTS = Counter(
    "kubeloop_api_requests_total",
    "Requests the operator sent to the API server, by HTTP verb, resource and code.",
    ["verb", "resource", "code"],
)
STATUS_WRITES = Counter(
    "kubeloop_status_writes_total", "Status subresource writes, by kind.", ["kind"]
)
DRIFT_SCORE = Gauge(
    "kubeloop_drift_score",
    "Latest drift score per feature.",
    ["namespace", "monitor", "feature", "method"],
)
DRIFT_DETECTED = Gauge(
    "kubeloop_drift_detected",
    "1 when the monitor's last check found drift, else 0.",
    ["namespace", "monitor"],
)
RETRAINS = Counter(
    "kubeloop_retrains_total", "TrainingJobs created by DriftMonitors.", ["namespace", "monitor"]
)
