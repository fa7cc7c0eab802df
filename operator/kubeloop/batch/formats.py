"""The file formats a batch run reads and writes (no pyarrow here: the command line
names them, and the operator builds the same parser)."""

CSV = "csv"
PARQUET = "parquet"
SUFFIXES = {".csv": CSV, ".parquet": PARQUET, ".pq": PARQUET}
FORMATS = (PARQUET, CSV)
"""The output formats, the default first."""
