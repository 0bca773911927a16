"""Is a model's input/output interface a breaking change for the clients of the deployed one?"""

from __future__ import annotations

from typing import Any


def breaking_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Each breaking difference from `old` to `new`, in words; empty when clients keep working.

    Breaking: an input or output removed (a rename is a removal plus an addition), retyped,
    or a new input that is required; an input at another position (clients may send rows as
    lists in schema order). Not breaking: a new optional input
    after the existing ones, a new output, an input that became optional.
    """
    problems: list[str] = []
    old_in = {f["name"]: f for f in old.get("inputs", [])}
    new_in = {f["name"]: f for f in new.get("inputs", [])}
    old_pos = {n: i for i, n in enumerate(old_in)}
    moved = [f"{n!r} {old_pos[n] + 1} -> {i + 1}" for i, n in enumerate(new_in) if n in old_pos and old_pos[n] != i]
    if moved:
        problems.append(f"input positions changed: {', '.join(moved)} (rows sent as lists would change meaning)")
    for name, field in old_in.items():
        if name not in new_in:
            problems.append(f"input {name!r} removed")
        elif new_in[name].get("type") != field.get("type"):
            problems.append(f"input {name!r} retyped {field.get('type')} -> {new_in[name].get('type')}")
        elif new_in[name].get("required", True) and not field.get("required", True):
            problems.append(f"input {name!r} became required")
    for name, field in new_in.items():
        if name not in old_in and field.get("required", True):
            problems.append(f"new required input {name!r}")
    old_out = {f["name"]: f for f in old.get("outputs", [])}
    new_out = {f["name"]: f for f in new.get("outputs", [])}
    for name, field in old_out.items():
        if name not in new_out:
            problems.append(f"output {name!r} removed")
        elif new_out[name].get("type") != field.get("type"):
            problems.append(f"output {name!r} retyped {field.get('type')} -> {new_out[name].get('type')}")
    return problems
