"""The five things we need from Dagster that have no public name in the pinned 1.13, each wrapped once.

* Which runs may still use their staging files: `IN_PROGRESS_RUN_STATUSES` is private and its meaning moved
  between versions (1.13 holds SUSPENDED but not QUEUED), so the list is spelled out from the public `DagsterRunStatus`.
* The error `PipesSubprocessClient.run` raises when the subprocess fails (`DagsterPipesExecutionError`, not
  exported): recognised by its class name, so a renamed or moved class fails loudly in tests, not via a private import.
* Adding tags to a running run (`DagsterInstance.add_run_tags`, as Dagster's own daemons do): a run from the UI's
  "Materialize" or the launchpad has no tags of ours and may name another file or warehouse, so its first step tags
  it with what it replays and corrects a wrong tag (docs/automation-and-ui.md).
* A name for the step of `build_last_update_freshness_checks` (else `freshness_check_<hash>` in the Gantt chart, logs
  and launchpad): `named_asset_checks` declares the same checks (same specs and metadata, so the freshness sensor
  still finds them) under a multi_asset_check of our name whose body is the factory's function
  (`node_def.compute_fn.decorated_fn`, an attribute of the op, not public).
* The `ResourceDefinition` a `ConfigurableResource` binds as (`get_resource_definition()`, which `Definitions` itself
  calls; not in the API docs): its public `configured` is how the `pipeline` resource's run config is checked when a
  run is launched (orchestration/settings.py, `checked_at_launch`).
"""

from __future__ import annotations

from dagster import DagsterRunStatus, ResourceDefinition

RUNS_IN_PROGRESS = (
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.MANAGED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.SUSPENDED,
    DagsterRunStatus.CANCELING,
)


def is_pipes_execution_error(error: BaseException) -> bool:
    """True for the error Dagster Pipes raises when the external process exits with a failure."""
    return any(cls.__name__ == "DagsterPipesExecutionError" for cls in type(error).__mro__)


def set_run_tags(instance, run, tags: dict[str, str]) -> dict[str, str]:
    """Give the run these tag values (added, or corrected where the run says otherwise); the tags changed."""
    changed = {key: value for key, value in tags.items() if run.tags.get(key) != value}
    if changed:
        instance.add_run_tags(run.run_id, changed)  # adds new keys, updates existing ones
    return changed


def named_asset_checks(checks_def, name: str, description: str):
    """`checks_def` (one multi-asset-check definition) as a step called `name`; same checks, same body."""
    from dagster import multi_asset_check

    body = checks_def.node_def.compute_fn.decorated_fn

    @multi_asset_check(name=name, description=description, specs=list(checks_def.check_specs), can_subset=True)
    def named(context):
        yield from body(context)

    return named


def resource_definition(resource) -> ResourceDefinition:
    """The ResourceDefinition that `resource` (a ConfigurableResource) binds as in `Definitions`."""
    return resource.get_resource_definition()
