"""tests/kstatus.py against the real kstatus library it re-states.

hack/build-kstatus.sh builds hack/kstatus (sigs.k8s.io/cli-utils `status.Compute`, at
KSTATUS_VERSION in hack/versions.env) once per version and prints the binary's path; a
binary that cannot be built fails these tests, it does not skip them. Every status the
operator writes (test_health_kstatus.SAMPLES) and the hand-made generic and malformed
objects of test_health_kstatus go to the binary in one call, and each result must match
`kstatus.compute` on the same object.
"""

from __future__ import annotations

import functools
import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import test_health_kstatus as kstatus_samples  # pytest puts tests/unit on sys.path

from tests import kstatus

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "hack" / "build-kstatus.sh"


def parametrized(test: Callable[..., Any]) -> list[tuple[Any, ...]]:
    """The argument tuples of a test's @pytest.mark.parametrize table."""
    (mark,) = [m for m in getattr(test, "pytestmark", []) if m.name == "parametrize"]
    return [tuple(getattr(row, "values", row)) for row in mark.args[1]]


def label(obj: dict[str, Any]) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


# name -> object: the operator's statuses first, then the hand-made rule and malformed cases.
OPERATOR = {s.id: s.obj for s in kstatus_samples.SAMPLES}
HAND_MADE = {
    f"generic {label(obj)}": obj for obj, *_ in parametrized(kstatus_samples.test_generic_rules)
} | {
    f"malformed {label(obj)}": obj
    for obj, *_ in parametrized(kstatus_samples.test_malformed_objects_are_unknown)
}
CASES = OPERATOR | HAND_MADE


@dataclass(frozen=True)
class Verdict:
    status: str
    message: str

    def __str__(self) -> str:
        return f"{self.status}: {self.message!r}"


def build_binary() -> Path:
    proc = subprocess.run(
        ["bash", str(BUILD)], cwd=ROOT, capture_output=True, text=True, timeout=900
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"hack/build-kstatus.sh failed (exit {proc.returncode}), so tests/kstatus.py cannot be "
            f"checked against the kstatus library:\n{proc.stderr[-4000:]}"
        )
    binary = Path(lines[-1])
    if not binary.is_file():
        raise RuntimeError(f"hack/build-kstatus.sh printed {binary}, which is not a file")
    return binary


@functools.cache
def library() -> dict[str, Verdict] | str:
    """What the library says for each case, from one run of the binary; or why not."""
    try:
        binary = build_binary()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as err:
        return str(err)
    names = list(CASES)
    proc = subprocess.run(
        [str(binary)],
        input=json.dumps([CASES[n] for n in names]),
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode != 0:
        return f"{binary} failed (exit {proc.returncode}): {proc.stderr.strip()}"
    out = json.loads(proc.stdout)
    if not isinstance(out, list) or len(out) != len(names):
        return f"{binary} answered {len(out)} results for {len(names)} objects: {proc.stdout}"
    return {n: Verdict(r["status"], r["message"]) for n, r in zip(names, out, strict=True)}


def library_verdicts() -> dict[str, Verdict]:
    verdicts = library()
    if isinstance(verdicts, str):
        pytest.fail(verdicts, pytrace=False)
    return verdicts


def ours(name: str) -> Verdict:
    result = kstatus.compute(CASES[name])
    return Verdict(str(result.status), result.message)


def mismatches(
    names: list[str], same: Callable[[Verdict, Verdict], bool]
) -> list[tuple[str, Verdict, Verdict]]:
    verdicts = library_verdicts()
    rows = [(n, verdicts[n], ours(n)) for n in names]
    return [row for row in rows if not same(row[1], row[2])]


def table(rows: list[tuple[str, Verdict, Verdict]], total: int) -> str:
    lines = [f"{len(rows)} of {total} differ from the kstatus library (sigs.k8s.io/cli-utils):"]
    for name, theirs, mine in rows:
        lines += [f"  {name}", f"      library: {theirs}", f"      ours:    {mine}"]
    return "\n".join(lines)


def check(names: list[str], same: Callable[[Verdict, Verdict], bool]) -> None:
    rows = mismatches(names, same)
    if rows:
        pytest.fail(table(rows, len(names)), pytrace=False)


def same_status(theirs: Verdict, mine: Verdict) -> bool:
    return theirs.status == mine.status


def same_result(theirs: Verdict, mine: Verdict) -> bool:
    return theirs == mine


def test_there_are_samples() -> None:
    assert len(OPERATOR) > 10
    assert len(OPERATOR) == len(kstatus_samples.SAMPLES)  # the sample ids are unique
    assert len(HAND_MADE) > 10
    assert set(library_verdicts()) == set(CASES)


def test_the_library_agrees_on_every_status_the_operator_writes() -> None:
    assert len(OPERATOR) > 10
    check(list(OPERATOR), same_status)


def test_the_library_agrees_on_the_generic_rules_and_malformed_objects() -> None:
    check(list(HAND_MADE), same_status)


def test_the_library_gives_the_same_messages() -> None:
    """tests/kstatus.py repeats the library's messages (test_health_kstatus.test_generic_rules
    pins them). Not for Unknown: there the library's message is its Go error text."""
    names = [n for n in CASES if ours(n).status != kstatus.Status.UNKNOWN]
    assert len(names) > 10
    check(names, same_result)


TROUBLESHOOTING = ROOT / "docs" / "troubleshooting.md"
MAPPING_HEADING = "## What Flux, `kubectl wait` and Argo CD see"


def settled(name: str) -> bool:
    """A status the operator writes and keeps (not mid-edit, mid-delete or unwritten)."""
    return not any(word in name for word in ("spec edited", "being deleted", "no status yet"))


def mapping_rows() -> set[tuple[str, str, str, str, str]]:
    """(kind, phase, Ready reason, kstatus from the library, Argo CD health) per sample."""
    import test_health_argocd as argo  # pytest puts tests/unit on sys.path

    verdicts = library_verdicts()
    rows = set()
    for sample in kstatus_samples.SAMPLES:
        if not settled(sample.id):
            continue
        status = sample.obj.get("status") or {}
        reason = next(
            c["reason"] for c in status.get("conditions", []) if c["type"] == "Ready"
        )
        rows.add((sample.kind, status.get("phase", ""), reason, verdicts[sample.id].status,
                  argo.EXPECTED[sample.id]))
    return rows


def documented_rows() -> set[tuple[str, ...]]:
    text = TROUBLESHOOTING.read_text()
    assert MAPPING_HEADING in text, f"{TROUBLESHOOTING} has no section {MAPPING_HEADING!r}"
    section = text.split(MAPPING_HEADING, 1)[1].split("\n## ", 1)[0]
    rows = set()
    for line in section.splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) == 5 and cells[0] not in ("Kind", "---"):
            rows.add(tuple(cells))
    return rows


def test_troubleshooting_maps_every_reason_as_the_library_does() -> None:
    """docs/troubleshooting.md's table is what the real kstatus library (and Argo CD's
    health script) say for every settled status the operator writes, row for row."""
    want, have = mapping_rows(), documented_rows()
    assert len(want) > 20
    missing = "\n".join(
        "| " + " | ".join(f"`{c}`" if i in (1, 2, 3, 4) else c for i, c in enumerate(r)) + " |"
        for r in sorted(want - have)
    )
    assert not want - have, f"rows missing from {TROUBLESHOOTING.name}:\n{missing}"
    assert not have - want, f"rows no sample backs: {sorted(have - want)}"
