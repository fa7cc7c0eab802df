"""Batch prediction: the data plane of a BatchPrediction's pods.

One pod of an Indexed Job runs ``kubeloop batch score``: it lists the input files
(:mod:`.locations`), cuts them into shards, files and Parquet row groups
(:mod:`.discover`, :mod:`.shards`), takes the shards its completion index is assigned,
scores each in record batches with the model server's predictor (:mod:`.features`,
:mod:`.reading`, :mod:`.scorer`), and commits each shard's output with its own small
manifest (:mod:`.commit`), so a retried pod skips what is already done. The last pod
to finish writes the output's manifest (:mod:`.finalize`). Input and output are local
(a claim) or on S3 (:mod:`.place`). Guarantees: docs/batch-prediction.md.
"""


class BatchError(Exception):
    """The run cannot go on; the message names the file (and column) and the cause."""
