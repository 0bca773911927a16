"""Settings of the built-in modules that the toolkit fills in from a model's metadata.

Pydantic only (no numpy), so the toolkit can type the metadata with them cheaply; the modules
themselves use these same classes (:mod:`serving.modules.preprocessing`).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, StrictStr


class Scaling(BaseModel):
    model_config = ConfigDict(extra="forbid")
    center: float = Field(0.0, allow_inf_nan=False)
    scale: float = Field(1.0, gt=0, allow_inf_nan=False)


class PreprocessingSettings(BaseModel):
    """``rename``: {request key: input name}, for object rows whose keys are not the input names
    (the request key replaces the name); ``ignore``: request keys accepted in object rows and
    dropped; ``categories``: {string input: [values]}, each value encoded as its position (a
    float), so the model gets a float64 array; a value not listed answers 422; ``scale``:
    {numeric input: {center, scale}}, stored parameters (e.g. a StandardScaler's mean_ and
    scale_ exported with the model): the model gets ``(x - center) / scale``. Scaling happens at
    the model's door, so outlier, drift and user modules see the values as sent, in the units
    the reference statistics describe."""

    model_config = ConfigDict(extra="forbid")
    rename: dict[str, str] = Field(default_factory=dict)
    ignore: list[str] = Field(default_factory=list)
    categories: dict[str, list[StrictStr]] = Field(default_factory=dict)
    scale: dict[str, Scaling] = Field(default_factory=dict)
