"""Replica counts for a canary's share, and the pods a ModelDeployment renders."""

from __future__ import annotations

import pytest

from kubeloop.api.modeldeployment import ModelDeploymentSpec
from kubeloop.render.modeldeployment import (
    DRAIN_SECONDS,
    canary_beside,
    pod_template,
    split_replicas,
    traffic_share,
)


@pytest.mark.parametrize(
    ("total", "percent", "split"),
    [
        (10, 10, (9, 1)),
        (3, 10, (2, 1)),  # 33%: the nearest to 10% that keeps one pod on each side
        (2, 50, (1, 1)),
        (1, 50, (1, 1)),  # one replica cannot hold two tracks: a second pod is added
        (4, 25, (3, 1)),
        (4, 60, (2, 2)),  # 50% is nearer to 60% than 75%
        (4, 70, (1, 3)),
        (5, 99, (1, 4)),
        (5, 100, (0, 5)),
        (5, 0, (5, 0)),
        (5, None, (5, 0)),
        (0, 50, (0, 0)),  # scaled to zero stays at zero
    ],
)
def test_split_is_the_nearest_share(
    total: int, percent: int | None, split: tuple[int, int]
) -> None:
    assert split_replicas(total, percent) == split


@pytest.mark.parametrize("total", range(2, 12))
@pytest.mark.parametrize("percent", range(1, 100))
def test_no_other_split_is_nearer(total: int, percent: int) -> None:
    stable, canary = split_replicas(total, percent)
    assert stable + canary == total and stable >= 1 and canary >= 1
    error = abs(canary / total - percent / 100)
    for other in range(1, total):
        assert error <= abs(other / total - percent / 100) + 1e-12


@pytest.mark.parametrize(
    ("stable", "percent", "canary"), [(9, 10, 1), (3, 50, 3), (1, 10, 1), (4, 20, 1), (2, 75, 6)]
)
def test_canary_beside_an_autoscaled_stable(stable: int, percent: int, canary: int) -> None:
    assert canary_beside(stable, percent) == canary


def test_share_of_ready_pods() -> None:
    assert traffic_share(2, 1) == 33
    assert traffic_share(0, 3) == 100
    assert traffic_share(0, 0) is None


def test_a_failing_fetch_or_server_leaves_the_end_of_its_log() -> None:
    spec = ModelDeploymentSpec.model_validate({"model": {"uri": "pvc://models/iris/v1"}})
    pod = pod_template(spec, "iris", "stable", "pvc://models/iris/v1", "img:1")
    for container in (*pod["spec"]["initContainers"], *pod["spec"]["containers"]):
        assert container["terminationMessagePolicy"] == "FallbackToLogsOnError", container


def test_server_drains_before_it_stops() -> None:
    spec = ModelDeploymentSpec.model_validate({"model": {"uri": "s3://m/v1"}})
    pod = pod_template(spec, "iris", "stable", "s3://m/v1", "img:1")
    (server,) = pod["spec"]["containers"]
    assert server["lifecycle"]["preStop"] == {"sleep": {"seconds": DRAIN_SECONDS}}
    assert pod["spec"].get("terminationGracePeriodSeconds", 30) > DRAIN_SECONDS


def test_batching_settings_reach_the_server_and_its_cli() -> None:
    import argparse

    from kubeloop.serving.cli import add_commands

    spec = ModelDeploymentSpec.model_validate(
        {
            "model": {"uri": "s3://m/v1"},
            "runtime": {"batching": {"maxBatchSize": 16, "maxWaitMs": 2.5}},
        }
    )
    args = pod_template(spec, "iris", "stable", "s3://m/v1", "img:1")["spec"]["containers"][0][
        "args"
    ]
    assert args[args.index("--max-batch-size") + 1] == "16"
    assert args[args.index("--max-batch-wait-ms") + 1] == "2.5"
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    parsed = parser.parse_args(
        ["serve", "--model-dir", "/m", *args[args.index("--max-batch-size") :]]
    )
    assert (parsed.max_batch_size, parsed.max_batch_wait_ms) == (16, 2.5)
    plain = pod_template(
        ModelDeploymentSpec.model_validate({"model": {"uri": "s3://m/v1"}}),
        "iris",
        "stable",
        "s3://m/v1",
        "img:1",
    )
    assert "--max-batch-size" not in plain["spec"]["containers"][0]["args"]
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--model-dir", "/m", "--max-batch-size", "0"])


@pytest.mark.parametrize(
    ("extra", "workers"),
    [
        ({}, "1"),
        ({"resources": {"cpu": "500m"}}, "1"),
        ({"resources": {"cpu": "2500m"}}, "2"),
        ({"resources": {"cpu": "4"}, "runtime": {"workers": 3}}, "3"),
    ],
)
def test_server_workers_follow_the_cpu_request(extra: dict[str, object], workers: str) -> None:
    spec = ModelDeploymentSpec.model_validate({"model": {"uri": "s3://m/v1"}, **extra})
    args = pod_template(spec, "iris", "stable", "s3://m/v1", "img:1")["spec"]["containers"][0][
        "args"
    ]
    assert args[args.index("--workers") + 1] == workers
