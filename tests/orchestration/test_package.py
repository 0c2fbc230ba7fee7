"""Importing orchestration freezes the objects of the import and leaves the GC as it found it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

SCRIPT = """
import gc, json, sys, weakref
if sys.argv[1] == "disabled":
    gc.disable()
import orchestration
class Node:
    pass
node = Node()
node.itself = node  # a cycle made after the import: only the cyclic GC can free it
alive = weakref.ref(node)
del node
gc.collect()
print(json.dumps({"enabled": gc.isenabled(), "frozen": gc.get_freeze_count(), "later_cycle_freed": alive() is None}))
"""


@pytest.mark.parametrize("before", ["enabled", "disabled"])
def test_import_freezes_its_objects_and_keeps_the_gc_setting(before: str) -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT, before], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["enabled"] is (before == "enabled")
    assert report["frozen"] > 100_000  # Dagster, pandas, DuckDB and the definitions
    assert report["later_cycle_freed"] is True
