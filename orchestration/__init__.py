"""Dagster orchestration of the transaction window pipeline."""

from orchestration.definitions import defs

__all__ = ["defs"]
