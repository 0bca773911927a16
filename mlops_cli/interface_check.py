"""Is a model's input/output interface a breaking change for the clients of the deployed one?

Both sides are the server's own type, :class:`serving.spec.SchemaSpec`; a schema kept as JSON (state.json
records one per deployment) is read through :func:`schema_of`.
"""

from __future__ import annotations

from typing import Any

from serving.spec import BundleError, SchemaSpec, parse_schema

from .errors import StageFailed


def schema_of(data: SchemaSpec | dict[str, Any], where: str = "schema") -> SchemaSpec:
    """The interface as the server reads it; StageFailed (one line) when the server would refuse it."""
    if isinstance(data, SchemaSpec):
        return data
    try:
        return parse_schema(data, where)
    except BundleError as exc:
        raise StageFailed(str(exc)) from None


def breaking_changes(old: SchemaSpec | dict[str, Any], new: SchemaSpec | dict[str, Any]) -> list[str]:
    """Each breaking difference from `old` to `new`, in words; empty when clients keep working.

    Breaking: an input or output removed (a rename is a removal plus an addition), retyped,
    or a new input that is required; an input at another position (clients may send rows as
    lists in schema order). Not breaking: a new optional input
    after the existing ones, a new output, an input that became optional.
    """
    old, new = schema_of(old, "old schema"), schema_of(new, "new schema")
    problems: list[str] = []
    old_in = {f.name: f for f in old.inputs}
    new_in = {f.name: f for f in new.inputs}
    old_pos = {n: i for i, n in enumerate(old_in)}
    moved = [f"{n!r} {old_pos[n] + 1} -> {i + 1}" for i, n in enumerate(new_in) if n in old_pos and old_pos[n] != i]
    if moved:
        problems.append(f"input positions changed: {', '.join(moved)} (rows sent as lists would change meaning)")
    for name, field in old_in.items():
        if name not in new_in:
            problems.append(f"input {name!r} removed")
        elif new_in[name].type != field.type:
            problems.append(f"input {name!r} retyped {field.type} -> {new_in[name].type}")
        elif new_in[name].required and not field.required:
            problems.append(f"input {name!r} became required")
    for name, field in new_in.items():
        if name not in old_in and field.required:
            problems.append(f"new required input {name!r}")
    old_out = {f.name: f for f in old.outputs}
    new_out = {f.name: f for f in new.outputs}
    for name, output in old_out.items():
        if name not in new_out:
            problems.append(f"output {name!r} removed")
        elif new_out[name].type != output.type:
            problems.append(f"output {name!r} retyped {output.type} -> {new_out[name].type}")
    return problems
