"""Postprocessing: raw model outputs -> one response dict per instance.

Classification fills ``label`` (the predicted class, mapped through ``labels`` by the class's
position in the model's ``classes_`` when ``labels`` is set) and ``probability`` (the predicted
class's probability); regression fills ``prediction``. Only outputs named in ``schema.outputs``
appear, cast to their declared type. Classification counts ``mlops_predictions_total{label}``;
regression observes ``mlops_prediction_value`` (buckets: ``prediction_buckets``). Fields other
modules put in ``batch.extra`` (the outlier module's annotation) are added to each prediction.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from serving.errors import BundleError, InvalidInstance, ServingError
from serving.metrics import DEFAULT_PREDICTION_BUCKETS, prediction_histogram
from serving.pipeline import Batch, ModuleContext

PROVIDES = {"classification": ("label", "probability"), "regression": ("prediction",)}
CASTS = {"string": str, "number": float, "integer": int, "boolean": bool}


class Settings(BaseModel):
    """``labels``: names for the model's classes, in the order of its ``classes_``;
    ``prediction_buckets``: upper bounds of the regression prediction histogram."""

    model_config = ConfigDict(extra="forbid")
    labels: list[StrictStr | StrictInt | StrictFloat | StrictBool] | None = Field(default=None, min_length=1)
    prediction_buckets: list[StrictFloat | StrictInt] | None = Field(default=None, min_length=1)


PostprocessingSettings = (
    Settings  # the name the module class's methods annotate with (its own `Settings` attribute is a value)
)


class Postprocessing:
    name = "postprocessing"
    Settings = Settings

    def __init__(self, ctx: ModuleContext, settings: PostprocessingSettings):
        self.ctx = ctx
        self.task = ctx.spec.model.task
        self.labels = settings.labels
        provides = PROVIDES[self.task]
        unknown = [o.name for o in ctx.spec.io.outputs if o.name not in provides]
        if unknown:
            raise BundleError(
                f"schema.outputs {unknown} cannot be filled for task {self.task} (it provides: {', '.join(provides)})"
            )
        self.outputs = [(o.name, CASTS[o.type]) for o in ctx.spec.io.outputs]
        self.casts = dict(self.outputs)
        self.position: dict[Any, int] | None = None
        self.counter = ctx.metrics.predictions
        self.histogram = None
        if self.task == "regression":
            buckets = settings.prediction_buckets or DEFAULT_PREDICTION_BUCKETS
            if list(buckets) != sorted(set(buckets)):
                raise BundleError("postprocessing.prediction_buckets must be increasing")
            self.histogram = prediction_histogram(ctx.metrics.registry, [float(b) for b in buckets])

    async def load(self) -> None:
        model = self.ctx.shared.get("model")
        if model is None:
            raise BundleError("the postprocessing module must come after the model module")
        if self.task != "classification":
            return
        if model.classes is not None:
            self.position = {c: i for i, c in enumerate(model.classes)}
        if self.labels is not None:
            if model.classes is None:
                raise BundleError("postprocessing.labels is set but the model has no classes_ to map them to")
            if len(self.labels) != len(model.classes):
                raise BundleError(
                    f"postprocessing.labels has {len(self.labels)} labels but the model has "
                    f"{len(model.classes)} classes {model.classes}"
                )
        cast = self.casts.get("label", str)
        for value in self.labels or model.classes or []:
            try:
                self.counter.labels(label=str(cast(value)))
            except (TypeError, ValueError):
                raise BundleError(f"class {value!r} cannot be an output 'label' of that declared type") from None

    def _refuse_non_finite(self, batch: Batch) -> bool:
        """Fail the requests with an instance whose output is NaN/inf (far outside what the model
        can score); True when any did. The others keep their answers."""
        finite = None
        for key in ("prediction", "proba"):
            values = batch.outputs.get(key)
            if values is not None and values.dtype.kind in "fc":
                ok = np.isfinite(values.reshape(len(values), -1)).all(axis=1)
                finite = ok if finite is None else finite & ok
        if finite is None or finite.all():
            return False
        for i in batch.live:
            lo, hi = batch.spans[i]
            bad = np.flatnonzero(~finite[lo:hi])
            if bad.size:
                batch.fail(
                    i,
                    InvalidInstance(
                        f"instance {int(bad[0])}: the model's output is not finite for these "
                        "values (outside the range it can score)",
                        code="non_finite_output",
                    ),
                )
        return True

    async def process(self, batch: Batch) -> Batch:
        if self._refuse_non_finite(batch):
            batch.compact()
            if not batch.live:
                return batch
        prediction = batch.outputs["prediction"]
        if prediction.ndim == 2 and prediction.shape[1] == 1:
            prediction = prediction[:, 0]
        values = prediction.tolist()
        try:
            if self.task == "regression":
                columns = {"prediction": values}
                if self.histogram is not None:
                    for v in values:
                        self.histogram.observe(float(v))
            else:
                columns = self._classify(values, batch.outputs.get("proba"))
            rows = [{name: cast(columns[name][r]) for name, cast in self.outputs} for r in range(len(values))]
        except (TypeError, ValueError, KeyError, IndexError) as exc:
            raise ServingError(
                f"cannot turn the model's output into a response: {type(exc).__name__}: {exc}", code="prediction_failed"
            ) from None
        for key, notes in batch.extra.items():
            for row, note in zip(rows, notes):
                row[key] = note
        for i in batch.live:
            lo, hi = batch.spans[i]
            batch.predictions[i] = rows[lo:hi]
        return batch

    def _classify(self, values: list[Any], proba: Any) -> dict[str, list[Any]]:
        """The label and probability columns; counts the labels."""
        positions = [self.position[v] for v in values] if self.position is not None else None
        names = [self.labels[p] for p in positions] if self.labels is not None and positions is not None else values
        cast = self.casts.get("label", str)
        columns: dict[str, list[Any]] = {"label": [cast(v) for v in names]}
        if proba is not None:  # the predicted class's column, or the best one without classes_
            columns["probability"] = (
                [proba[i, p] for i, p in enumerate(positions)] if positions is not None else proba.max(axis=1).tolist()
            )
        for label, n in Counter(columns["label"]).items():
            self.counter.labels(label=str(label)).inc(n)
        return columns
