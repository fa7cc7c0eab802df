"""What the pods made from a user's spec may do: Pod Security "restricted" by default,
more only where a ComputeTemplate the resource names allows it in its namespace.

Whoever may create a TrainingJob, a ModelDeployment or a DriftMonitor gets pods made
with the operator's rights, so the spec must not reach what its author could not: a
hostPath volume, root, another service account of the namespace. The renderers already
give every pod restricted's security context (non-root, no privilege escalation, all
capabilities dropped, seccomp RuntimeDefault); the spec can step outside it only
through `volumes`, `serviceAccountName`, `runAsRoot` and an AppArmor annotation in
`podMetadata`, which this module checks.

The same rules, in CEL, refuse such a resource at apply time (api/podsecurity_policy.py);
the operator checks again here (a policy not installed, a template changed or created
after the resource was admitted) and refuses to run the resource instead. Every
message is worded as the policy words it. docs/operations.md, "Pod security"."""

from __future__ import annotations

from kubeloop.api.computetemplate import (
    ANY,
    APPARMOR_ALLOWED,
    APPARMOR_PREFIX,
    RESTRICTED_VOLUME_TYPES,
    ComputeTemplateSpec,
    PodSecurityAllowance,
)
from kubeloop.api.modeldeployment import ModelDeploymentSpec
from kubeloop.api.trainingjob import TrainingJobSpec

DEFAULT_SERVICE_ACCOUNT = "default"
RESTRICTED = "Pod Security restricted"


def allowance(
    spec_compute: str | None, template: ComputeTemplateSpec | None, namespace: str
) -> PodSecurityAllowance | None:
    """The template's allowances when the resource names it and they hold in its
    namespace; a default template (not named) allows nothing more."""
    if not spec_compute or template is None or template.pod_security is None:
        return None
    allowed = template.pod_security
    if ANY in allowed.namespaces or namespace in allowed.namespaces:
        return allowed
    return None


def _refusal(prefix: str, what: str, field: str, compute: str | None, namespace: str) -> str:
    if compute:
        return (
            f"{prefix}.{what}, which ComputeTemplate {compute} does not allow in namespace "
            f"{namespace} (podSecurity.{field})"
        )
    return (
        f"{prefix}.{what}, which {RESTRICTED} does not allow: name a ComputeTemplate that "
        f"allows it in {prefix}.compute (podSecurity.{field})"
    )


def volume_types(volume: dict[str, object]) -> list[str]:
    """The volume's kinds (a well-formed volume has one; none means emptyDir)."""
    return sorted(k for k in volume if k != "name")


def training(
    spec: TrainingJobSpec,
    prefix: str,
    namespace: str,
    allowed: PodSecurityAllowance | None,
) -> list[str]:
    """What `spec` (a TrainingJob's, or a DriftMonitor's retrain template at `prefix`)
    asks for beyond restricted and beyond `allowed`, one message each."""
    errors: list[str] = []
    extra_types = allowed.volume_types if allowed else []
    for volume in spec.volumes:
        kinds = volume_types(volume)
        refused = [
            k for k in kinds if k not in RESTRICTED_VOLUME_TYPES and k not in extra_types
        ]
        if refused and ANY not in extra_types:
            errors.append(
                _refusal(
                    prefix,
                    f"volumes: {volume.get('name', '')} is a {', '.join(kinds)} volume",
                    "volumeTypes",
                    spec.compute,
                    namespace,
                )
            )
    errors += _service_account(spec.service_account_name, prefix, spec.compute, namespace, allowed)
    annotations = spec.pod_metadata.annotations if spec.pod_metadata else {}
    for key, value in sorted(annotations.items()):
        if key.startswith(APPARMOR_PREFIX) and not _apparmor_allowed(value):
            errors.append(
                f"{prefix}.podMetadata.annotations: {key} is {value}, which {RESTRICTED} "
                f"does not allow ({APPARMOR_ALLOWED})"
            )
    if spec.run_as_root and not (allowed and allowed.run_as_root):
        errors.append(
            _refusal(prefix, "runAsRoot is true", "runAsRoot", spec.compute, namespace)
        )
    return errors


def _apparmor_allowed(profile: str) -> bool:
    return profile == "runtime/default" or profile.startswith("localhost/")


def serving(
    spec: ModelDeploymentSpec, namespace: str, allowed: PodSecurityAllowance | None
) -> list[str]:
    """A ModelDeployment's pods are the operator's own (its image unless
    `runtime.image`, restricted context, only `pvc://` claims mounted): only the
    service account is the user's choice."""
    return _service_account(spec.service_account_name, "spec", spec.compute, namespace, allowed)


def _service_account(
    name: str | None,
    prefix: str,
    compute: str | None,
    namespace: str,
    allowed: PodSecurityAllowance | None,
) -> list[str]:
    if not name or name == DEFAULT_SERVICE_ACCOUNT:
        return []
    names = allowed.service_account_names if allowed else []
    if ANY in names or name in names:
        return []
    return [
        _refusal(
            prefix,
            f"serviceAccountName is {name}",
            "serviceAccountNames",
            compute,
            namespace,
        )
    ]
