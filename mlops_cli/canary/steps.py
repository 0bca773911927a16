"""The steps of a canary release in Argo Rollouts' words, parsed from `rollout.steps`.

`{set_weight: 10}` sends 10 % of new requests to the canary; `{pause: 60s}` (or `{pause: {duration: 60s}}`)
waits; a pause with no duration (`{pause: {}}`) waits for `mlops canary promote`; `{analysis: default}`
runs the analysis template of that name (canary_analysis.templates). After the last step the canary is
promoted to 100 % and the old revision removed. Parsed into canonical one-key dicts: set_weight -> int,
pause -> seconds (float) or None, analysis -> template name.
"""

from __future__ import annotations

import re
from typing import Any

KINDS = ("set_weight", "pause", "analysis")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def duration_s(value: Any) -> float:
    """Seconds of `60`, `60s`, `2m`, `1h`, `500ms`; ValueError in one line otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"{value!r} is not a duration (e.g. 30, 30s, 2m, 1h)")
        seconds = float(match.group(1)) * _UNIT[match.group(2)]
    if seconds < 0 or seconds > 7 * 86400:
        raise ValueError(f"duration {value!r} is out of range (0 .. 7 days)")
    return seconds


def parse_step(index: int, raw: Any) -> dict[str, Any]:
    """One step as a canonical one-key dict; ValueError naming the step otherwise."""
    where = f"step {index + 1}"
    if not isinstance(raw, dict) or len(raw) != 1:
        raise ValueError(
            f"{where}: a step is a mapping with one key of {', '.join(KINDS)}, e.g. {{set_weight: 10}}; got {raw!r}"
        )
    ((kind, value),) = raw.items()
    if kind not in KINDS:
        raise ValueError(f"{where}: unknown step {kind!r}; known: {', '.join(KINDS)}")
    if kind == "set_weight":
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or int(value) != value
            or not 0 <= value <= 100
        ):
            raise ValueError(f"{where}: set_weight takes a whole percent 0..100, got {value!r}")
        return {"set_weight": int(value)}
    if kind == "pause":
        if isinstance(value, dict):
            unknown = set(value) - {"duration"}
            if unknown:
                raise ValueError(f"{where}: pause takes only `duration`, got {', '.join(sorted(unknown))}")
            value = value.get("duration")
        try:
            seconds: float | None = None if value in (None, "") else duration_s(value)
        except ValueError as exc:
            raise ValueError(f"{where}: pause: {exc}") from None
        return {"pause": seconds}
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: analysis takes a template name (canary_analysis.templates), got {value!r}")
    return {"analysis": value.strip()}


def parse_steps(raw: Any) -> list[dict[str, Any]]:
    if not isinstance(raw, list):
        raise ValueError("a list of steps, e.g. [{set_weight: 10}, {pause: 60s}, {analysis: default}]")
    return [parse_step(i, step) for i, step in enumerate(raw)]


def describe(step: dict[str, Any]) -> str:
    """One step in words: `set_weight 10`, `pause 60s`, `pause until promoted`, `analysis default`."""
    ((kind, value),) = step.items()
    if kind == "pause":
        return "pause until promoted" if value is None else f"pause {value:g}s"
    return f"{kind} {value}"
