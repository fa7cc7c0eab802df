"""The progress wire formats (kubeloop.progress) and the training-script helper
(kubeloop.train): what a run writes, the operator reads back, and nothing else."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

import kubeloop.train
from kubeloop import progress
from kubeloop.progress import (
    MAX_MESSAGE_BYTES,
    MAX_METRICS,
    MAX_NAME_LENGTH,
    Report,
    encode_final,
    parse_final,
    parse_text,
    render_text,
)

REPO = Path(__file__).resolve().parents[2]
FULL = Report(
    step=120,
    total_steps=1000,
    metrics={"loss": 0.173, "val/accuracy": 0.5, "lr": 1e-05, "epoch:count": 3.0},
    started=1712000000.5,
    updated=1712000360.25,
)


# -- Report ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("step", "total", "percent"),
    [
        (5, 10, 50.0),
        (0, 10, 0.0),
        (10, 10, 100.0),
        (15, 10, 100.0),  # a script that overshoots its own total: clamped
        (5, 0, None),
        (5, None, None),
        (None, 10, None),
    ],
)
def test_percent(step: int | None, total: int | None, percent: float | None) -> None:
    assert Report(step=step, total_steps=total).percent == percent


# -- Prometheus text ------------------------------------------------------------------


def test_render_parse_round_trip() -> None:
    assert parse_text(render_text(FULL)) == FULL


def test_render_is_valid_exposition_format() -> None:
    report = Report(step=3, metrics={"loss": 0.5, 'odd"name\\\n': 1.0, "nan": math.nan})
    families = {f.name: f for f in text_string_to_metric_families(render_text(report))}
    assert families["kubeloop_training_step"].type == "gauge"
    assert families["kubeloop_training_step"].samples[0].value == 3
    metric = families["kubeloop_training_metric"]
    assert metric.documentation
    by_name = {s.labels["name"]: s.value for s in metric.samples}
    assert by_name["loss"] == 0.5
    assert by_name['odd"name\\\n'] == 1.0  # escaped on the way out, intact on the way in
    assert math.isnan(by_name["nan"])


def test_render_leaves_out_what_is_unknown() -> None:
    text = render_text(Report(step=4))
    assert "kubeloop_training_step 4\n" in text
    assert "total_steps" not in text and "kubeloop_training_metric" not in text
    assert render_text(Report()) == ""


def test_parse_text_skips_what_is_not_ours() -> None:
    text = textwrap.dedent(
        """\
        # HELP python_gc_objects_collected_total Objects collected during gc
        # TYPE python_gc_objects_collected_total counter
        python_gc_objects_collected_total{generation="0"} 123.0
        kubeloop_training_step 12.0 1712000000000
        kubeloop_training_step 99
        kubeloop_training_total_steps not-a-number
        this line is garbage
        kubeloop_training_metric{name="loss",split="val"} 2.5e-1
        kubeloop_training_metric{name="nan"} NaN
        kubeloop_training_metric{name="inf"} +Inf
        kubeloop_training_metric{name="bad name"} 1
        kubeloop_training_metric{name="loss"} 7
        kubeloop_training_metric{unclosed="x} 1
        kubeloop_training_metric 5
        kubeloop_training_start_time_seconds -1
        kubeloop_training_last_report_time_seconds 1712000001
        """
    )
    assert parse_text(text) == Report(step=12, metrics={"loss": 0.25}, updated=1712000001.0)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "# just a comment\n",
        "up 1\nprocess_cpu_seconds_total 4.2\n",
        "kubeloop_training_step -3\nkubeloop_training_step 1.5\n",
        'kubeloop_training_metric{name="1st"} 1\n',
    ],
)
def test_parse_text_without_our_gauges(text: str) -> None:
    assert parse_text(text) is None


def test_parse_text_keeps_the_first_16_valid_metrics() -> None:
    lines = ['kubeloop_training_metric{name="%s"} 1' % ("x" * (MAX_NAME_LENGTH + 1))]
    lines += [f'kubeloop_training_metric{{name="m{i}"}} {i}' for i in range(40)]
    report = parse_text("\n".join(lines))
    assert report is not None
    assert list(report.metrics) == [f"m{i}" for i in range(MAX_METRICS)]


def test_parse_text_refuses_pages_over_64_kib() -> None:
    page = render_text(FULL)
    assert parse_text(page + "#" * (64 * 1024 - len(page))) == FULL
    assert parse_text(page + "#" * (64 * 1024 - len(page) + 1)) is None


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_parse_text_never_raises(text: str) -> None:
    parse_text(text)
    parse_text("kubeloop_training_step 1\n" + text)


# -- the final JSON message -----------------------------------------------------------


def test_final_round_trip() -> None:
    message = encode_final(FULL)
    assert json.loads(message) == {
        "step": 120,
        "totalSteps": 1000,
        "metrics": {"loss": 0.173, "val/accuracy": 0.5, "lr": 1e-05, "epoch:count": 3.0},
    }
    assert parse_final(message) == Report(step=120, total_steps=1000, metrics=FULL.metrics)


def test_encode_final_leaves_out_none_and_non_finite() -> None:
    report = Report(step=3, metrics={"loss": math.nan, "acc": 0.9, "big": math.inf})
    assert encode_final(report) == '{"step":3,"metrics":{"acc":0.9}}'
    assert encode_final(Report()) == "{}"


def test_encode_final_fits_even_with_100_long_metrics() -> None:
    metrics = {f"{i:03d}_".rjust(MAX_NAME_LENGTH, "m"): 1 / 3 + i for i in range(100)}
    report = Report(step=2**62, total_steps=2**62, metrics=metrics)
    message = encode_final(report)
    assert len(message.encode("utf-8")) <= MAX_MESSAGE_BYTES
    decoded = parse_final(message)
    assert decoded is not None and decoded.step == 2**62
    assert list(decoded.metrics) == list(metrics)[:MAX_METRICS]


def test_encode_final_drops_metrics_from_the_end_until_it_fits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(progress, "MAX_MESSAGE_BYTES", 120)
    metrics = {f"metric_{i}": 0.123456789 for i in range(10)}
    message = encode_final(Report(step=1, metrics=metrics))
    assert len(message) <= 120
    kept = json.loads(message)["metrics"]
    assert kept and list(kept) == list(metrics)[: len(kept)]
    assert len(kept) < len(metrics)


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        "   \n",
        "Traceback (most recent call last):\n  ValueError: boom",
        "{",
        "[1, 2]",
        "42",
        '"step"',
        "null",
        "{}",
        '{"foo": 1, "accuracy": 0.9}',
        '{"metrics": [["loss", 1.0]]}',
        '{"metrics": "loss=1"}',
        '{"step": "12", "totalSteps": null}',
        "[" * 4000,  # deeper than the decoder recurses
        '{"step": 1' + "0" * 4500 + "}",  # oversized, and too many digits for int()
        '{"metrics": {"x": 1' + "0" * 4000 + "}}",  # an int too large for a float
        '{"step": 1, "metrics": {"\ud800": 1}}',  # a lone surrogate
        '{"step": 1, "pad": "' + "x" * MAX_MESSAGE_BYTES + '"}',  # valid, but too long
        '{"step": 1, "pad": "' + "é" * (MAX_MESSAGE_BYTES // 2) + '"}',  # too many bytes
    ],
)
def test_parse_final_rejects(text: str | None) -> None:
    assert parse_final(text) is None


def test_parse_final_drops_nan_infinity_and_bools() -> None:
    text = (
        '{"step": true, "totalSteps": 10, "metrics": '
        '{"a": NaN, "b": Infinity, "c": -Infinity, "d": true, "e": "1", "f": null, '
        '"g": [1], "h": 1e400, "ok": 0.5, "int": 3}}'
    )
    assert parse_final(text) == Report(total_steps=10, metrics={"ok": 0.5, "int": 3.0})


def test_parse_final_keeps_16_metrics() -> None:
    metrics = {f"m{i}": i for i in range(MAX_METRICS + 1)}
    report = parse_final(json.dumps({"metrics": metrics}))
    assert report is not None
    assert list(report.metrics) == [f"m{i}" for i in range(MAX_METRICS)]


def test_parse_final_validates_names() -> None:
    longest, too_long = "a" * MAX_NAME_LENGTH, "a" * (MAX_NAME_LENGTH + 1)
    names = [longest, too_long, "", "1abc", "a b", "ü", "loss{x}", "_ok-1.2:3/4"]
    report = parse_final(json.dumps({"metrics": dict.fromkeys(names, 1.0)}))
    assert report is not None
    assert list(report.metrics) == [longest, "_ok-1.2:3/4"]


@pytest.mark.parametrize("bad", [-1, 1.5, 2.0, "3", None, [], {}, 2**63])
def test_parse_final_drops_bad_steps(bad: object) -> None:
    text = json.dumps({"step": bad, "totalSteps": bad, "metrics": {"x": 1}})
    assert parse_final(text) == Report(metrics={"x": 1.0})


def test_parse_final_reads_steps_alone() -> None:
    assert parse_final(' {"step": 0, "totalSteps": 7}\n') == Report(step=0, total_steps=7)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(json_values, st.text(max_size=200))
def test_parse_final_never_raises(value: object, text: str) -> None:
    for document in (
        value,
        {"step": value, "totalSteps": value, "metrics": value},
        {"metrics": {"x": value}},
    ):
        parse_final(json.dumps(document))
    parse_final(text)


# -- the helper, in this process ------------------------------------------------------


@pytest.fixture
def helper(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """kubeloop.train with no server and no termination log, forgotten afterwards (so
    that its exit handler in this process writes nothing)."""
    monkeypatch.setenv("KUBELOOP_PROGRESS_PORT", "0")
    monkeypatch.delenv("KUBELOOP_TERMINATION_LOG", raising=False)
    kubeloop.train.reset()
    yield
    kubeloop.train.reset()


@pytest.mark.usefixtures("helper")
def test_report_merges_metrics() -> None:
    kubeloop.train.report(step=1, total_steps=10, metrics={"loss": 2.0, "lr": 0.1})
    first = kubeloop.train.current()
    kubeloop.train.report(step=2, metrics={"loss": 1.5})
    kubeloop.train.report(metrics={"acc": 0.5})
    now = kubeloop.train.current()
    assert (now.step, now.total_steps) == (2, 10)
    assert now.metrics == {"loss": 1.5, "lr": 0.1, "acc": 0.5}
    assert now.started == first.started
    assert now.updated is not None and first.started is not None
    assert now.updated >= first.started


@pytest.mark.usefixtures("helper")
def test_report_rejects_wrong_arguments() -> None:
    with pytest.raises(TypeError):
        kubeloop.train.report(step=True)
    with pytest.raises(TypeError):
        kubeloop.train.report(step=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="negative"):
        kubeloop.train.report(total_steps=-1)
    with pytest.raises(ValueError, match="metric name"):
        kubeloop.train.report(metrics={"bad name": 1.0})
    with pytest.raises(TypeError):
        kubeloop.train.report(metrics={"loss": "low"})  # type: ignore[dict-item]
    assert kubeloop.train.current() == Report()


@pytest.mark.usefixtures("helper")
def test_report_keeps_16_metrics_and_warns(capsys: pytest.CaptureFixture[str]) -> None:
    kubeloop.train.report(metrics={f"m{i}": i for i in range(MAX_METRICS + 2)})
    kubeloop.train.report(metrics={"m0": -1.0, f"m{MAX_METRICS}": 1.0})
    metrics = kubeloop.train.current().metrics
    assert len(metrics) == MAX_METRICS and metrics["m0"] == -1.0
    assert capsys.readouterr().err.count("dropped") == 2  # once per name


@pytest.mark.usefixtures("helper")
def test_no_termination_log_outside_a_container(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    kubelet_file = tmp_path / "termination-log"
    monkeypatch.setattr(kubeloop.train, "DEFAULT_TERMINATION_LOG", str(kubelet_file))
    assert kubeloop.train.finish({"acc": 1.0}) is None
    assert not kubelet_file.exists()  # never created
    kubelet_file.touch()
    assert kubeloop.train.finish() == kubelet_file
    assert parse_final(kubelet_file.read_text()) == Report(metrics={"acc": 1.0})
    ours = tmp_path / "ours"
    monkeypatch.setenv("KUBELOOP_TERMINATION_LOG", str(ours))
    assert kubeloop.train.finish() == ours


# -- the helper in a training script --------------------------------------------------


def script_env(**env: str) -> dict[str, str]:
    environ = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("KUBELOOP_") and k != "JOB_COMPLETION_INDEX"
    }
    environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO / "operator"), os.environ.get("PYTHONPATH")) if p
    )
    environ.setdefault("KUBELOOP_PROGRESS_PORT", "0")
    environ.update(env)
    return environ


def run_script(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=script_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


REPORTS = """
    import kubeloop.train
    kubeloop.train.report(step=1, total_steps=4, metrics={"loss": 2.0, "lr": 0.1})
    kubeloop.train.report(step=2, metrics={"loss": 1.0})
    kubeloop.train.report(step=3, metrics={"loss": 0.5, "acc": float("nan")})
"""


def test_normal_exit_writes_the_final_message(tmp_path: Path) -> None:
    log = tmp_path / "termination-log"
    done = run_script(REPORTS, KUBELOOP_TERMINATION_LOG=str(log))
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert parse_final(log.read_text()) == Report(
        step=3, total_steps=4, metrics={"loss": 0.5, "lr": 0.1}
    )


@pytest.mark.parametrize("error", ["ValueError('boom')", "KeyboardInterrupt"])
def test_uncaught_exception_writes_nothing(tmp_path: Path, error: str) -> None:
    """The interpreter sets sys.last_value before exit handlers run (checked here on the
    Python that runs the tests): a crashed run leaves the termination log to Kubernetes."""
    log = tmp_path / "termination-log"
    done = run_script(REPORTS + f"    raise {error}\n", KUBELOOP_TERMINATION_LOG=str(log))
    assert done.returncode != 0
    assert "Traceback" in done.stderr
    assert not log.exists()


def test_exception_after_finish_keeps_the_final_message(tmp_path: Path) -> None:
    log = tmp_path / "termination-log"
    finish_then_exit = """
    kubeloop.train.finish({"acc": 0.75})
    kubeloop.train.report(step=4)  # after finish: not written again at exit
    raise SystemExit(3)
    """
    done = run_script(REPORTS + finish_then_exit, KUBELOOP_TERMINATION_LOG=str(log))
    assert done.returncode == 3, done.stderr
    assert parse_final(log.read_text()) == Report(
        step=3, total_steps=4, metrics={"loss": 0.5, "lr": 0.1, "acc": 0.75}
    )


def test_unwritable_termination_log_is_a_warning(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "termination-log"
    done = run_script(REPORTS, KUBELOOP_TERMINATION_LOG=str(missing))
    assert done.returncode == 0
    assert "cannot write the final message" in done.stderr
    assert not missing.exists()


def test_script_that_never_reports_writes_nothing(tmp_path: Path) -> None:
    log = tmp_path / "termination-log"
    done = run_script("import kubeloop.train\n", KUBELOOP_TERMINATION_LOG=str(log))
    assert done.returncode == 0, done.stderr
    assert not log.exists()


def get(url: str) -> tuple[int, str, str]:
    """(status, content type, body) of a GET."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], ""


def test_server_answers_with_the_latest_step() -> None:
    port = free_port()
    code = """
    import sys
    import kubeloop.train
    for step in range(1, 8):
        kubeloop.train.report(step=step, total_steps=10, metrics={"loss": 1 / step})
    print("reported", flush=True)
    sys.stdin.readline()  # until the test is done
    """
    with subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=script_env(KUBELOOP_PROGRESS_PORT=str(port)),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None and proc.stdin is not None
        try:
            assert proc.stdout.readline() == "reported\n"
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 10
            while True:
                try:
                    status, content_type, body = get(f"{url}/metrics")
                    break
                except OSError:
                    assert time.monotonic() < deadline, "the progress server never answered"
                    time.sleep(0.05)  # poll again
            assert status == 200
            assert content_type.startswith("text/plain; version=0.0.4")
            report = parse_text(body)
            assert report is not None
            assert (report.step, report.total_steps, report.percent) == (7, 10, 70.0)
            assert report.metrics == {"loss": 1 / 7}
            assert get(f"{url}/other")[0] == 404
            assert get(f"{url}/metrics?x=1")[0] == 200
        finally:
            proc.stdin.close()
            assert proc.wait(timeout=30) == 0
            assert proc.stderr is not None
            assert proc.stderr.read() == ""  # no access log on the script's stderr


CONNECTS = """
    import socket, sys
    import kubeloop.train
    kubeloop.train.report(step=1)  # the server, if any, listens once this returns
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5).close()
        print("served")
    except ConnectionRefusedError:
        print("not served")
"""


@pytest.mark.parametrize(
    ("index", "served", "every_pod"),
    [(None, True, False), ("0", True, False), ("1", False, False), ("7", False, False),
     ("7", True, True)],
)
def test_only_worker_zero_serves(index: str | None, served: bool, every_pod: bool) -> None:
    """... unless every pod is to serve (a BatchPrediction's pods)."""
    port = free_port()
    env = {"KUBELOOP_PROGRESS_PORT": str(port)}
    if every_pod:
        env["KUBELOOP_PROGRESS_EVERY_POD"] = "1"
    if index is not None:
        env["JOB_COMPLETION_INDEX"] = index
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CONNECTS), str(port)],
        env=script_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ("served" if served else "not served")


def test_port_zero_serves_nothing() -> None:
    code = """
    import kubeloop.train
    kubeloop.train.report(step=1)
    assert kubeloop.train._state.server is None
    """
    done = run_script(code, KUBELOOP_PROGRESS_PORT="0")
    assert done.returncode == 0, done.stderr


def test_port_in_use_is_a_warning(tmp_path: Path) -> None:
    log = tmp_path / "termination-log"
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_script(
            REPORTS, KUBELOOP_PROGRESS_PORT=str(port), KUBELOOP_TERMINATION_LOG=str(log)
        )
    assert done.returncode == 0, done.stderr
    assert f"cannot serve progress on port {port}" in done.stderr
    assert parse_final(log.read_text()) is not None
