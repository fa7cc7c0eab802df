"""Pure renderers: a validated spec and its metadata in, child manifests out (no I/O)."""
