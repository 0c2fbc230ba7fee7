"""Dagster orchestration of the transaction window pipeline: `dagster asset materialize -m orchestration`.

Importing it only defines things. The run's first step freezes the long-lived objects of the
process (`write_audit_publish.freeze_long_lived_objects`).
"""

from orchestration.definitions import defs

__all__ = ["defs"]
