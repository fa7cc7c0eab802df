"""Which API server answers `refused` calls final for a rendered child: those a retry of
the same spec cannot change, reported as InvalidSpec instead of retried forever."""

from kubeloop.controllers.common import refused
from kubeloop.kube import KubeError

UNTYPABLE_JOB = (
    "failed to create typed patch object (ns/tj-r0; batch/v1, Kind=Job): errors:\n"
    '  .spec.template.spec.containers[name="worker"].volumeMounts[mountPath=""].x: '
    "field not declared in schema"
)


def test_invalid_and_untypable_objects_are_refused() -> None:
    assert refused(KubeError(422, "Invalid", "spec.x: Invalid value"))
    assert refused(KubeError(400, "BadRequest", "bad"))
    # Server-side apply's answer to an object that does not fit the kind's schema.
    assert refused(KubeError(500, "", UNTYPABLE_JOB))


def test_passing_failures_are_retried() -> None:
    assert not refused(KubeError(500, "InternalError", "etcdserver: request timed out"))
    assert not refused(KubeError(409, "Conflict", "the object has been modified"))
    assert not refused(KubeError(403, "Forbidden", "jobs.batch is forbidden"))
