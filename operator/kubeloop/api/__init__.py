"""The typed API of group kubeloop.io/v1alpha1: one source for parsing and the CRDs."""

from kubeloop.api.driftmonitor import DriftMonitorSpec, DriftMonitorStatus
from kubeloop.api.modeldeployment import ModelDeploymentSpec, ModelDeploymentStatus
from kubeloop.api.trainingjob import TrainingJobSpec, TrainingJobStatus
from kubeloop.names import API_VERSION, GROUP, VERSION

__all__ = [
    "API_VERSION",
    "GROUP",
    "VERSION",
    "DriftMonitorSpec",
    "DriftMonitorStatus",
    "ModelDeploymentSpec",
    "ModelDeploymentStatus",
    "TrainingJobSpec",
    "TrainingJobStatus",
]
