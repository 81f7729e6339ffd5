"""The task registry: task name -> (pipeline class, predictor class).

A task registers itself where its code is defined (`register_task` at the bottom of its
`predictor` module), so the engine never imports a task. `fovea.load_predictor` imports the
built-in tasks (`BUILTIN_TASK_MODULES`) before it opens a file; a new task adds its module there
and is then covered by the contract test (`tests/engine/test_task_contract.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

from fovea.errors import CheckpointError

# modules whose import registers the built-in tasks (imported by `fovea.load_predictor`)
BUILTIN_TASK_MODULES = ("fovea.anomaly.predictor", "fovea.classify.predictor", "fovea.segment.predictor",
                        "fovea.caption.predictor", "fovea.forgery.predictor")


@dataclass(frozen=True)
class TaskDef:
    """name: the task's `kind` ("anomaly", "classify", "segment"); pipeline: its `TaskPipeline`
    subclass; predictor: its `Predictor` subclass; cli: the command family that writes its files."""

    name: str
    pipeline: type
    predictor: type
    cli: str = ""


_TASKS: dict[str, TaskDef] = {}


def register_task(task: TaskDef) -> TaskDef:
    """Add (or replace, on module reload) a task; its pipeline and predictor carry the same name."""
    if task.pipeline.task != task.name or task.predictor.kind != task.name:
        raise ValueError(f"task {task.name!r}: pipeline.task={task.pipeline.task!r} and "
                         f"predictor.kind={task.predictor.kind!r} must both equal the task name")
    _TASKS[task.name] = task
    return task


def registered_tasks() -> dict[str, TaskDef]:
    """{name: TaskDef} of every task imported so far."""
    return dict(_TASKS)


def get_task(name: str, source: str = "") -> TaskDef:
    """The TaskDef of `name`; a CheckpointError naming `source` if no such task is registered."""
    if name not in _TASKS:
        raise CheckpointError(
            f"{source or 'model'}: task {name!r} is not registered (known: {sorted(_TASKS)}). Fix: open it with "
            "fovea.load_predictor (imports every built-in task), or import the task's predictor module first."
        )
    return _TASKS[name]
