"""`kubeloop`: one console script for the operator, the model server and the tools."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from kubeloop import __version__
from kubeloop.names import OPERATOR_HEALTH_PORT, OPERATOR_METRICS_PORT


def _cmd_version(args: argparse.Namespace) -> int:
    print(f"kubeloop {__version__}")
    return 0


def _cmd_crds(args: argparse.Namespace) -> int:
    from kubeloop.api.crdgen import KINDS, render_yaml, write_crds

    if args.docs:
        from kubeloop.api.docgen import write_reference

        for path in write_reference(args.docs):
            print(f"wrote {path}", file=sys.stderr)
    if args.admission:
        from kubeloop.api import admission, podsecurity_policy

        for module in (admission, podsecurity_policy):
            print(f"wrote {module.write(Path(args.admission))}", file=sys.stderr)
    if args.output:
        for path in write_crds(args.output):
            print(f"wrote {path}", file=sys.stderr)
    elif args.docs or args.admission:
        return 0
    else:
        sys.stdout.write("---\n".join(render_yaml(kind) for kind in KINDS))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from prometheus_client import start_http_server

    from kubeloop.controllers.common import OperatorConfig
    from kubeloop.logs import setup_logging
    from kubeloop.operator import run_operator

    setup_logging(args.log_level, args.log_format)
    allow = [u for u in (args.drift_source_allow or []) if u]
    env_allow = os.environ.get("KUBELOOP_DRIFT_SOURCE_ALLOWLIST", "")
    allow += [u.strip() for u in env_allow.split(",") if u.strip()]
    config = OperatorConfig(image=args.image, drift_source_allowlist=allow, workers=args.workers)
    if args.metrics_port:
        start_http_server(args.metrics_port, addr=args.metrics_addr)
    namespaces: list[str] = [] if args.all_namespaces else list(args.namespace or [])
    env_ns = os.environ.get("KUBELOOP_WATCH_NAMESPACES", "")
    if not args.all_namespaces and not namespaces and env_ns:
        namespaces = [n.strip() for n in env_ns.split(",") if n.strip()]
    from kubeloop.kube import Kube

    kube = Kube.from_environment()
    kube.field_manager = args.field_manager
    asyncio.run(
        run_operator(
            config,
            kube=kube,
            namespaces=namespaces,
            liveness_endpoint=f"http://{args.health_addr}:{args.health_port}/healthz"
            if args.health_port
            else None,
            peering=args.peering,
        )
    )
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    """Exit 0 with a verdict (Passed or Rejected), 2 when none could be reached."""
    from kubeloop.evaluation import EvaluationError
    from kubeloop.evaluation.command import (
        error_message,
        evaluate,
        format_table,
        termination_message,
        to_json,
        write_termination_log,
    )

    try:
        result = evaluate(
            champion=args.champion or None,
            challenger=args.challenger,
            data=args.data,
            metric=args.metric,
            label_column=args.label_column or None,
            min_improvement=args.min_improvement,
            floor=args.floor,
            live_urls=args.live_rows,
            live_min_rows=args.live_min_rows,
            live_mode=args.live_mode,
        )
        if args.termination_log:
            write_termination_log(args.termination_log, termination_message(result))
    except EvaluationError as exc:
        print(f"kubeloop evaluate: {exc}", file=sys.stderr)
        if args.termination_log:
            try:
                write_termination_log(args.termination_log, error_message(str(exc)))
            except EvaluationError as log_exc:
                print(f"kubeloop evaluate: {log_exc}", file=sys.stderr)
        return 2
    print(to_json(result) if args.json else format_table(result))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kubeloop", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("version", help="print the version")
    p.set_defaults(func=_cmd_version)

    p = sub.add_parser("crds", help="print or write the CustomResourceDefinitions")
    p.add_argument("--output", "-o", help="directory: one YAML file per kind")
    p.add_argument("--docs", help="directory: also write one Markdown reference per kind")
    p.add_argument(
        "--admission", help="directory: also write the ComputeTemplate admission policies"
    )
    p.set_defaults(func=_cmd_crds)

    p = sub.add_parser("run", help="run the operator")
    scope = p.add_mutually_exclusive_group()
    scope.add_argument(
        "--all-namespaces",
        "-A",
        action="store_true",
        help="watch every namespace (default unless --namespace is given)",
    )
    scope.add_argument(
        "--namespace", "-n", action="append", help="watch only this namespace (repeatable)"
    )
    p.add_argument(
        "--image",
        default=os.environ.get("KUBELOOP_IMAGE", "ghcr.io/kubeloop/kubeloop:0.1.0"),
        help="image for the model server and the model-fetch init container",
    )
    p.add_argument(
        "--metrics-port", type=int, default=OPERATOR_METRICS_PORT, help="0 disables /metrics"
    )
    p.add_argument("--metrics-addr", default="0.0.0.0")
    p.add_argument(
        "--health-port", type=int, default=OPERATOR_HEALTH_PORT, help="0 disables /healthz"
    )
    p.add_argument("--health-addr", default="0.0.0.0")
    p.add_argument("--workers", type=int, default=32, help="concurrent reconciles")
    p.add_argument(
        "--drift-source-allow",
        action="append",
        help="URL prefix a DriftMonitor's Prometheus source may use (repeatable)",
    )
    p.add_argument(
        "--peering",
        action="store_true",
        help="run with Kopf peering: several replicas, exactly one active",
    )
    p.add_argument(
        "--field-manager",
        default=os.environ.get("KUBELOOP_FIELD_MANAGER", "kubeloop"),
        help="the name the API server records in managedFields for the operator's writes "
        "(env KUBELOOP_FIELD_MANAGER; default kubeloop): tells two installations apart",
    )
    p.add_argument("--log-level", default=os.environ.get("KUBELOOP_LOG_LEVEL", "INFO"))
    p.add_argument(
        "--log-format",
        choices=["json", "text"],
        default=os.environ.get("KUBELOOP_LOG_FORMAT", "json"),
    )
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser(
        "evaluate",
        help="score a champion and a challenger model on labelled data and gate",
        description="Score the challenger (and the champion, when given) on the same "
        "labelled CSV or Parquet data with one metric, and decide whether the challenger "
        "passes: it must reach --floor and beat the champion by --min-improvement. "
        "Exit 0 with a verdict (Passed or Rejected), 2 when none could be reached. "
        "model.joblib is unpickled: evaluate only models from a trusted source.",
    )
    p.add_argument("--champion", metavar="URI", help="the model in service (path or file://)")
    p.add_argument(
        "--challenger", metavar="URI", required=True, help="the candidate (path or file://)"
    )
    p.add_argument(
        "--data",
        metavar="URI",
        help="labelled .csv or .parquet (path or file://); needed unless --live-mode instead",
    )
    p.add_argument(
        "--live-rows",
        metavar="URL",
        action="append",
        help="a model server's labelled rows (http://POD:8080/v2/models/NAME/feedback/rows); "
        "repeat for every pod (docs/safe-retraining.md, live labels)",
    )
    p.add_argument(
        "--live-min-rows",
        type=int,
        default=1,
        help="live rows needed to judge on them (default 1)",
    )
    p.add_argument(
        "--live-mode",
        choices=["beside", "instead"],
        default="beside",
        help="beside: pass on the holdout and the live rows (the holdout alone when they are "
        "too few); instead: on the live rows alone (default beside)",
    )
    p.add_argument(
        "--metric",
        required=True,
        metavar="NAME",
        help="accuracy, f1, roc_auc, r2 (higher is better); log_loss, rmse, mae (lower)",
    )
    p.add_argument(
        "--label-column", help="the column of true labels (default: model.json's label_column)"
    )
    p.add_argument(
        "--min-improvement",
        type=float,
        default=0.0,
        help="how much better than the champion the challenger must score (default 0: "
        "at least as good)",
    )
    p.add_argument(
        "--floor",
        type=float,
        help="the score the challenger must reach (a ceiling for lower-is-better metrics)",
    )
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument(
        "--termination-log",
        metavar="PATH",
        default=os.environ.get("KUBELOOP_TERMINATION_LOG") or None,
        help="also write the result (or the error) as compact JSON here, at most 4096 "
        "bytes (env KUBELOOP_TERMINATION_LOG)",
    )
    p.set_defaults(func=_cmd_evaluate)

    from kubeloop.batch.cli import add_commands as add_batch
    from kubeloop.drift.cli import add_commands as add_drift
    from kubeloop.serving.cli import add_commands as add_serving

    add_serving(sub)
    add_drift(sub)
    add_batch(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
