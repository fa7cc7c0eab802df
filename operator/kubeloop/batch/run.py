"""One pod's whole run: list and check the input, take this index's shards, score
them, and finalize the output if every shard of every pod is in.

Every pod tries to finalize when its own shards are done; the last one to finish
finds all shards there and writes ``_manifest.json`` (two finishing together write
the same bytes). ``kubeloop batch finalize`` does the same on its own.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kubeloop import modeldir
from kubeloop.batch import BatchError
from kubeloop.batch import place as places
from kubeloop.batch.commit import MANIFEST_FILE, SHARDS_DIR, run_key
from kubeloop.batch.discover import Layout, discover
from kubeloop.batch.features import OutputSpec
from kubeloop.batch.finalize import OutputManifest, finalize, missing_shards
from kubeloop.batch.locations import check_apart, list_inputs, place_of
from kubeloop.batch.meter import Meter
from kubeloop.batch.place import Place
from kubeloop.batch.report import MODEL_UNUSABLE, OUTPUT_EXISTS
from kubeloop.batch.scorer import Job, score_shards
from kubeloop.batch.shards import DEFAULT_BATCH_ROWS, DEFAULT_MIN_ROWS, assign
from kubeloop.modeldir import LoadedModel, ModelLoadError, load_model


@dataclass(frozen=True)
class Request:
    """A batch run as the pod's command line states it."""

    model_dir: str
    input: str
    output: str
    spec: OutputSpec = field(default_factory=OutputSpec)
    batch_rows: int = DEFAULT_BATCH_ROWS
    min_shard_rows: int = DEFAULT_MIN_ROWS
    # What to do with the complete output of another run in the output directory.
    if_exists: str = "overwrite"


def model_sha256(model_dir: str | Path) -> str:
    """The model's identity: the sha256 of its ``manifest.json`` (which lists every
    file's sha256), or of its model files where a directory has no manifest."""
    root = Path(model_dir)
    digest = hashlib.sha256()
    names: tuple[str, ...] = (modeldir.METADATA_FILE, modeldir.MODEL_FILE)
    if (root / modeldir.MANIFEST_FILE).is_file():
        names = (modeldir.MANIFEST_FILE,)
    for name in names:
        try:
            digest.update((root / name).read_bytes())
        except OSError as exc:
            raise BatchError(f"{root / name}: {exc.strerror or exc}") from exc
    return digest.hexdigest()


@dataclass(frozen=True)
class Prepared:
    model: LoadedModel
    layout: Layout
    run: str
    model_info: dict[str, Any]
    out: Place


def prepare_run(request: Request) -> Prepared:
    """Load the model, check the output settings and every input file.

    The model directory is checked against its manifest first: a pod may read it straight
    from a claim, not only through ``kubeloop fetch-model``, and every shard's run key
    vouches for that manifest. One without a manifest (made by hand) is loaded as it is.
    """
    try:
        modeldir.verify(request.model_dir, required=False)
        model = load_model(request.model_dir)
    except ModelLoadError as exc:
        raise BatchError(f"{MODEL_UNUSABLE}: {exc}") from exc
    request.spec.check(model)
    check_apart(request.input, request.output)
    layout = discover(
        list_inputs(request.input),
        model.feature_names,
        request.spec.passthrough,
        request.min_shard_rows,
    )
    digest = model_sha256(request.model_dir)
    info = {"name": model.metadata.name, "version": model.metadata.version, "sha256": digest}
    return Prepared(
        model=model,
        layout=layout,
        run=run_key(digest, asdict(request.spec)),
        model_info=info,
        out=place_of(request.output),
    )


def _forget_other_run(out: Place, run: str, if_exists: str = "overwrite") -> None:
    """An output manifest of another run no longer describes this directory; with
    ``if_exists="refuse"`` it is left alone and the run refused instead."""
    raw = places.read_bytes(out, MANIFEST_FILE)
    if raw is None:
        return
    try:
        previous: OutputManifest | None = OutputManifest.model_validate_json(raw)
    except ValueError:
        previous = None
    if previous is None or previous.run != run:
        if if_exists == "refuse":
            raise BatchError(
                f"{out.show()}: {OUTPUT_EXISTS}: it holds the complete output of another run "
                f"({MANIFEST_FILE}); choose another output or allow overwrite"
            )
        places.delete(out, MANIFEST_FILE)


def score(request: Request, index: int, count: int, workers: int) -> dict[str, Any]:
    """Score completion index ``index`` of ``count``'s shards; a summary to print."""
    prepared = prepare_run(request)
    out = prepared.out
    places.make_folder(out, SHARDS_DIR)
    _forget_other_run(out, prepared.run, request.if_exists)
    mine = assign(list(prepared.layout.shards), index, count)
    meter = Meter(prepared.layout.total_rows(mine), len(mine))
    meter.report()
    job = Job(
        model_dir=request.model_dir,
        out=out,
        layout=prepared.layout,
        spec=request.spec,
        run=prepared.run,
        batch_rows=request.batch_rows,
    )
    manifests = score_shards(job, mine, workers, meter, prepared.model)
    summary: dict[str, Any] = {
        "index": index,
        "count": count,
        "shards": len(mine),
        "rows": sum(m.output.rows for m in manifests),
        "rowsScored": meter.rows_scored,
        "rowsPerSecond": round(meter.rows_per_second(), 1),
    }
    _, missing = missing_shards(out, prepared.layout.shards, prepared.run, request.spec.format)
    extras: dict[str, Any] = {"model": prepared.model_info["sha256"]}
    if not missing:
        manifest = finalize(
            out, prepared.layout.shards, prepared.run, request.spec.format, prepared.model_info
        )
        output = {
            "rows": manifest.rows,
            "files": len(manifest.files),
            "sha256": places.sha256(out, MANIFEST_FILE),
        }
        summary["output"] = extras["output"] = output
        extras["drift"] = manifest.drift
    meter.finish(extras)
    return summary


def finalize_run(request: Request) -> OutputManifest:
    """Write the output's manifest, or fail naming the shards not done."""
    prepared = prepare_run(request)
    return finalize(
        prepared.out,
        prepared.layout.shards,
        prepared.run,
        request.spec.format,
        prepared.model_info,
    )
