"""The Argo CD health checks (docs/gitops/health/*.lua) on every status the operator writes.

The scripts run in a real Lua 5.1 interpreter, the dialect of gopher-lua, which Argo CD
embeds: lupa's `lua51` module when installed, and a `lua` binary through a subprocess
when one is on PATH (both when both are). Without either, the Lua tests skip.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_health_kstatus import SAMPLES, Sample  # pytest puts tests/unit on sys.path

GITOPS = Path(__file__).resolve().parents[2] / "docs" / "gitops"
SCRIPTS = {
    kind: (GITOPS / "health" / f"{kind.lower()}.lua").read_text()
    for kind in ("TrainingJob", "ModelDeployment", "DriftMonitor")
}
ARGO_HEALTH = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}
LUA_BINARIES = ("lua5.1", "luajit", "lua5.4", "lua5.3", "lua")


@dataclass(frozen=True)
class Lua:
    name: str
    run: Callable[[str, dict[str, Any]], tuple[str, str]]  # (script, obj) -> (status, message)


def lupa_lua51() -> Lua | None:
    try:
        from lupa import lua51
    except ImportError:
        return None

    def run(script: str, obj: dict[str, Any]) -> tuple[str, str]:
        runtime = lua51.LuaRuntime()
        runtime.globals().obj = runtime.table_from(obj, recursive=True)
        hs = runtime.execute(script)
        return hs["status"], hs["message"]

    return Lua("lupa-lua51", run)


def lua_literal(value: Any) -> str:
    """A Lua expression for a JSON-like Python value."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        escaped = (
            chr(b) if 32 <= b < 127 and b not in b'"\\' else f"\\{b:03d}" for b in value.encode()
        )
        return '"' + "".join(escaped) + '"'
    if isinstance(value, list):
        return "{" + ", ".join(lua_literal(v) for v in value) + "}"
    return "{" + ", ".join(f"[{lua_literal(k)}] = {lua_literal(v)}" for k, v in value.items()) + "}"


def lua_binary() -> Lua | None:
    binary = next((path for name in LUA_BINARIES if (path := shutil.which(name))), None)
    if binary is None:
        return None

    def run(script: str, obj: dict[str, Any]) -> tuple[str, str]:
        # The script's top-level `return hs` becomes the return of a function.
        program = (
            f"obj = {lua_literal(obj)}\n"
            f"local hs = (function()\n{script}\nend)()\n"
            'io.write(hs.status, "\\n", hs.message)\n'
        )
        done = subprocess.run(
            [binary, "-"],
            input=program,
            capture_output=True,
            encoding="utf-8",
            check=True,
            timeout=30,
        )
        status, message = done.stdout.split("\n", 1)
        return status, message

    return Lua(Path(binary).name, run)


INTERPRETERS = [lua for lua in (lupa_lua51(), lua_binary()) if lua is not None]
NO_LUA = (
    "no Lua interpreter: install lupa (pip install lupa) or a Lua 5.1 binary "
    "(apt-get install lua5.1)"
)


@pytest.fixture(params=INTERPRETERS or [None], ids=lambda lua: lua.name if lua else "none")
def lua(request: pytest.FixtureRequest) -> Lua:
    if request.param is None:
        pytest.skip(NO_LUA)
    interpreter: Lua = request.param
    return interpreter


def argo_health(lua: Lua, obj: dict[str, Any]) -> tuple[str, str]:
    status, message = lua.run(SCRIPTS[obj["kind"]], obj)
    assert status in ARGO_HEALTH
    return status, message


# Argo CD health per sample of test_health_kstatus (kstatus there): Healthy where kstatus
# says Current and Progressing where it says InProgress, except where marked.
EXPECTED = {
    "TrainingJob Pending (creating its Job)": "Progressing",
    "TrainingJob Pending (WaitingForScheduler)": "Progressing",
    "TrainingJob Pending (Unschedulable: no node can ever fit a worker)": "Degraded",
    "TrainingJob Queued (Kueue admission)": "Suspended",  # kstatus: InProgress
    "TrainingJob Running": "Healthy",
    "TrainingJob Restarting (gang restart after a worker failed)": "Progressing",
    "TrainingJob Succeeded": "Healthy",
    "TrainingJob Succeeded (its Job gone after the TTL)": "Healthy",
    "TrainingJob Failed (BackoffLimitExceeded, no restarts left)": "Degraded",
    "TrainingJob Failed (DeadlineExceeded)": "Degraded",
    "TrainingJob Suspended": "Suspended",  # kstatus: Current
    "TrainingJob Invalid (spec.workers: 0)": "Degraded",
    "TrainingJob no status yet (just created)": "Progressing",
    "TrainingJob Running, spec edited (generation not yet observed)": "Progressing",
    "ModelDeployment Pending (its TrainingJob still running)": "Progressing",
    "ModelDeployment Pending (TrainingJobNotFound)": "Progressing",
    "ModelDeployment Progressing (no replica available yet)": "Progressing",
    "ModelDeployment Progressing (rolling out)": "Progressing",
    "ModelDeployment Ready": "Healthy",
    "ModelDeployment Ready (canary rolled back, stable serving)": "Healthy",
    "ModelDeployment Failed (its TrainingJob failed)": "Degraded",
    "ModelDeployment Failed (PodsCrashing)": "Degraded",
    "ModelDeployment Progressing (WaitingForScheduler: no node fits a pod)": "Progressing",
    "ModelDeployment Invalid (spec.replicas: -1)": "Degraded",
    "ModelDeployment Ready, spec edited (generation not yet observed)": "Progressing",
    "DriftMonitor Pending (TargetNotFound)": "Progressing",
    "DriftMonitor Collecting (too few samples)": "Healthy",
    "DriftMonitor Healthy": "Healthy",
    "DriftMonitor Drifted": "Healthy",
    "DriftMonitor Drifted (retraining)": "Healthy",
    # kstatus: InProgress (no Stalled: retried every interval); Argo CD shows the phase.
    "DriftMonitor Degraded (SourceUnavailable, retried every interval)": "Degraded",
    "DriftMonitor Pending (ReferencePending: no pod serves the model yet)": "Progressing",
    "DriftMonitor Degraded (SourceInvalid, retried every interval)": "Degraded",
    "DriftMonitor Degraded (ReferenceInvalid)": "Degraded",
    "DriftMonitor Degraded (SourceNotAllowed)": "Degraded",
    "DriftMonitor Invalid (spec.method: bogus)": "Degraded",
    "DriftMonitor Healthy, spec edited (generation not yet observed)": "Progressing",
}
KSTATUS_TO_ARGO = {"Current": "Healthy", "InProgress": "Progressing", "Failed": "Degraded"}
KSTATUS_EXCEPTIONS = {
    "TrainingJob Queued (Kueue admission)",
    "TrainingJob Suspended",
    "DriftMonitor Degraded (SourceUnavailable, retried every interval)",
    "DriftMonitor Degraded (SourceInvalid, retried every interval)",
}


def deleted(sample: Sample) -> bool:
    # Argo CD answers "Progressing: Pending deletion" itself and never runs the script.
    return "deletionTimestamp" in sample.obj["metadata"]


CHECKED = [s for s in SAMPLES if not deleted(s)]


def test_every_sample_has_an_argo_expectation() -> None:
    assert {s.id for s in CHECKED} == set(EXPECTED)


def test_argo_health_agrees_with_kstatus_except_where_marked() -> None:
    for sample in CHECKED:
        agrees = KSTATUS_TO_ARGO[sample.kstatus] == EXPECTED[sample.id]
        assert agrees != (sample.id in KSTATUS_EXCEPTIONS), sample.id


@pytest.mark.parametrize("sample", CHECKED, ids=lambda s: s.id)
def test_argo_health_of_each_status_the_operator_writes(lua: Lua, sample: Sample) -> None:
    status, message = argo_health(lua, sample.obj)
    assert status == EXPECTED[sample.id]
    written = sample.obj.get("status")
    if written is None:
        assert message == "Waiting for the operator's first status"
    elif written["observedGeneration"] != sample.obj["metadata"]["generation"]:
        assert message == (
            f"Waiting for the operator to observe generation {sample.obj['metadata']['generation']}"
        )
    else:
        assert message == written["message"]


def hand_made(kind: str, status: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "kubeloop.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": "x", "namespace": "ml", "generation": 3},
        "status": status,
    }


def ready(status: str, message: str) -> dict[str, Any]:
    return {"type": "Ready", "status": status, "reason": "R", "message": message}


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        # Without observedGeneration nothing says which spec the status is for.
        (
            hand_made("TrainingJob", {"phase": "Running", "conditions": [ready("True", "r")]}),
            ("Progressing", "Waiting for the operator to observe generation 3"),
        ),
        # No summary message: the deciding condition's message is shown.
        (
            hand_made(
                "ModelDeployment", {"observedGeneration": 3, "conditions": [ready("True", "ok")]}
            ),
            ("Healthy", "ok"),
        ),
        # Ready Unknown or missing: kstatus says InProgress, and so do the scripts.
        (
            hand_made(
                "DriftMonitor", {"observedGeneration": 3, "conditions": [ready("Unknown", "?")]}
            ),
            ("Progressing", "?"),
        ),
        (hand_made("TrainingJob", {"observedGeneration": 3}), ("Progressing", "")),
        (
            hand_made(
                "ModelDeployment", {"observedGeneration": 3, "conditions": [ready("False", "no")]}
            ),
            ("Progressing", "no"),
        ),
    ],
    ids=[
        "no observedGeneration",
        "message from the condition",
        "Ready Unknown",
        "no conditions",
        "Ready False without Reconciling",
    ],
)
def test_argo_health_of_hand_made_statuses(
    lua: Lua, obj: dict[str, Any], expected: tuple[str, str]
) -> None:
    assert argo_health(lua, obj) == expected


def test_lua_literal_round_trips_through_lua(lua: Lua) -> None:
    text = 'quote " backslash \\ newline \n tab \t unicode ü → 0/3'
    obj = hand_made(
        "ModelDeployment",
        {"observedGeneration": 3, "message": text, "conditions": [ready("True", "")]},
    )
    assert argo_health(lua, obj) == ("Healthy", text)


def test_argocd_cm_snippet_holds_the_scripts_byte_for_byte() -> None:
    snippet = yaml.safe_load((GITOPS / "argocd-cm.yaml").read_text())
    assert snippet["kind"] == "ConfigMap" and snippet["metadata"]["name"] == "argocd-cm"
    assert snippet["data"] == {
        f"resource.customizations.health.kubeloop.io_{kind}": script
        for kind, script in SCRIPTS.items()
    }
