"""`hack/rbac_necessity.py --shard I/N`: `make test` runs the halves at once, one per
lane; together they run every rule once, and each merges its rules into the one
results file."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def necessity() -> ModuleType:
    spec = importlib.util.spec_from_file_location("rbac_necessity_shards",
                                                  ROOT / "hack" / "rbac_necessity.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_shards_run_every_rule_once() -> None:
    mod = necessity()
    rules = sorted(mod.rendered_writes())
    first, second = mod.shard(rules, "1/2"), mod.shard(rules, "2/2")
    assert sorted(first + second) == rules
    assert not set(first) & set(second)
    assert abs(len(first) - len(second)) <= 1
    assert mod.shard(rules, "1/1") == rules


@pytest.mark.parametrize("spec", ["0/2", "3/2", "1/0"])
def test_a_shard_out_of_range_is_refused(spec: str) -> None:
    with pytest.raises(SystemExit, match="I/N"):
        necessity().shard([("", "a", "b")], spec)


def test_shards_merge_into_one_results_file(tmp_path: Path) -> None:
    mod = necessity()
    out = tmp_path / "rbac-necessity.json"
    out.write_text(json.dumps({"results": [{"rule": "c/d/patch", "verdict": "stale"}]}))
    mod.write_results(out, [{"rule": "b/x/create", "verdict": "needed"}], True, "p")
    mod.write_results(out, [{"rule": "a/y/delete", "verdict": "needed"},
                            {"rule": "c/d/patch", "verdict": "needed"}], True, "p")
    results = json.loads(out.read_text())["results"]
    assert [(r["rule"], r["verdict"]) for r in results] == [
        ("a/y/delete", "needed"), ("b/x/create", "needed"), ("c/d/patch", "needed")]
    # A whole run (no shard, no --only) starts the file afresh.
    mod.write_results(out, [{"rule": "b/x/create", "verdict": "needed"}], False, "p")
    assert [r["rule"] for r in json.loads(out.read_text())["results"]] == ["b/x/create"]
