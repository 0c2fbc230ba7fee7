"""Dagster orchestration of the transaction window pipeline.

Importing it freezes the objects that exist by then (gc.freeze): Dagster, pandas, DuckDB and these
definitions, about 270k objects that live as long as the process. The cyclic GC then no longer scans
them at every full collection, nor at exit, and does not run during the import itself. Measured on
the 12k-row sample: the run started 0.1 s sooner and its process exited 0.05 s after RUN_SUCCESS
instead of 0.41-0.47 s, at the same peak memory (277 MB). Objects made later, such as a run's data,
are collected as before.
"""

import gc

_gc_was_enabled = gc.isenabled()
gc.disable()
try:
    from orchestration.definitions import defs
finally:
    gc.freeze()
    if _gc_was_enabled:
        gc.enable()

__all__ = ["defs"]
