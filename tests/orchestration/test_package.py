"""Importing orchestration only defines things; the run's first step freezes the long-lived objects."""

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
after_import = gc.get_freeze_count()
from orchestration.write_audit_publish import freeze_long_lived_objects
freeze_long_lived_objects()
frozen = gc.get_freeze_count()
freeze_long_lived_objects()
class Node:
    pass
node = Node()
node.itself = node  # a cycle made after the freeze: only the cyclic GC can free it
alive = weakref.ref(node)
del node
gc.collect()
print(json.dumps({"enabled": gc.isenabled(), "after_import": after_import, "frozen": frozen,
                  "frozen_again": gc.get_freeze_count(), "later_cycle_freed": alive() is None}))
"""


@pytest.mark.parametrize("before", ["enabled", "disabled"])
def test_import_has_no_side_effect_and_a_step_freezes_once(before: str) -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT, before], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["enabled"] is (before == "enabled")
    assert report["after_import"] == 0, "importing the package froze objects"
    assert report["frozen"] > 100_000  # Dagster, pandas, DuckDB and the definitions
    assert report["frozen_again"] == report["frozen"], "a second step must not freeze again"
    assert report["later_cycle_freed"] is True
