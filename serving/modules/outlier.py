"""Outlier: per-feature bounds from the reference statistics, and optionally a fitted detector.

Bounds per watched feature: ``zscore`` ``mean ± threshold·std`` (default threshold 4), or
``iqr`` ``[q1 - threshold·IQR, q3 + threshold·IQR]`` with q1/q3 interpolated from the reference
quantiles (default threshold 3, Tukey's "far out"). A ``detector`` (a joblib artifact in the
bundle whose ``predict`` returns -1 for an outlier, e.g. a fitted IsolationForest, checked
against ``detector_sha256`` before loading) flags whole instances. Every outlying value counts
in ``mlops_outliers_total{feature}``, every flagged instance in
``mlops_outlier_instances_total{reason}``. ``action``: ``count`` (metrics only, the default:
responses keep their schema), ``annotate`` (each prediction gets ``"outliers": [feature, ...]``,
``"detector"`` when the detector flagged it) or ``reject`` (the request answers 422 naming the
instance and the features).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from serving.errors import BundleError, InvalidInstance, one_line
from serving.metrics import outlier_metrics
from serving.modules.model import read_verified
from serving.modules.reference import REFERENCE_FILE, check_relative, load_reference, numeric_columns
from serving.pipeline import Batch, ModuleContext

DEFAULT_THRESHOLD = {"zscore": 4.0, "iqr": 3.0}


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    method: Literal["zscore", "iqr"] = "zscore"
    threshold: float | None = Field(default=None, gt=0)
    action: Literal["count", "annotate", "reject"] = "count"
    features: list[str] | None = Field(default=None, min_length=1)
    reference: str = REFERENCE_FILE
    detector: str | None = None
    detector_sha256: str | None = None

    @field_validator("reference", "detector")
    @classmethod
    def _inside_bundle(cls, value: str | None) -> str | None:
        return value if value is None else check_relative(value)

    @model_validator(mode="after")
    def _detector_digest(self) -> Settings:
        if (self.detector is None) != (self.detector_sha256 is None):
            raise ValueError("detector and detector_sha256 go together")
        return self


OutlierSettings = (
    Settings  # the name the module class's methods annotate with (its own `Settings` attribute is a value)
)


class Outlier:
    name = "outlier"
    Settings = Settings

    def __init__(self, ctx: ModuleContext, settings: OutlierSettings):
        self.ctx = ctx
        self.settings = settings
        self.threshold = settings.threshold or DEFAULT_THRESHOLD[settings.method]
        self.values, self.instances = outlier_metrics(ctx.metrics.registry)
        self.detector: Any = None  # an estimator with predict(), from the bundle

    async def load(self) -> None:
        s = self.settings
        reference = load_reference(self.ctx.bundle_dir, s.reference, "outlier")
        watched = numeric_columns(self.ctx, reference, s.features, "outlier")
        columns = [c for c, _ in watched]
        self.columns = None if columns == list(range(len(self.ctx.spec.io.inputs))) else np.array(columns)
        self.names = [n for _, n in watched]
        lows, highs = [], []
        for name in self.names:
            ref = reference.features[name]
            if s.method == "zscore":
                lows.append(ref.mean - self.threshold * ref.std)
                highs.append(ref.mean + self.threshold * ref.std)
            else:
                q1, q3 = np.interp([0.25, 0.75], reference.levels, ref.quantiles)
                lows.append(q1 - self.threshold * (q3 - q1))
                highs.append(q3 + self.threshold * (q3 - q1))
        self.low, self.high = np.array(lows), np.array(highs)
        self.per_feature = [self.values.labels(feature=n) for n in self.names]
        self.by_bounds = self.instances.labels(reason="bounds")
        if s.detector is not None:
            self.detector = self._load_detector(s.detector, s.detector_sha256)
            self.by_detector = self.instances.labels(reason="detector")

    def _load_detector(self, artifact: str, sha256: str | None) -> object:
        import io

        import joblib

        spec = self.ctx.spec.model.model_copy(update={"artifact": artifact, "sha256": sha256})
        try:
            detector = joblib.load(io.BytesIO(read_verified(self.ctx.bundle_dir, spec)))
        except BundleError as exc:
            raise BundleError(f"outlier.detector: {exc}") from None
        except Exception as exc:
            raise BundleError(
                f"outlier.detector: cannot load {artifact}: {type(exc).__name__}: {one_line(exc)}"
            ) from None
        if not callable(getattr(detector, "predict", None)):
            raise BundleError(f"outlier.detector: {type(detector).__name__} has no predict method")
        return detector

    async def process(self, batch: Batch) -> Batch:
        features = batch.features
        assert features is not None, "preprocessing must run before outlier"
        x = features if self.columns is None else features[:, self.columns]
        if x.dtype != np.float64:
            x = x.astype(np.float64)
        mask = (x < self.low) | (x > self.high)
        flagged = mask.any(axis=1)
        detected = None
        if self.detector is not None and len(x):
            detected = np.asarray(self.detector.predict(features)) == -1
            if detected.any():
                self.by_detector.inc(int(detected.sum()))
        if flagged.any():
            for counter, n in zip(self.per_feature, mask.sum(axis=0).tolist()):
                if n:
                    counter.inc(n)
            self.by_bounds.inc(int(flagged.sum()))
        elif detected is None or not detected.any():
            if self.settings.action == "annotate":
                batch.extra["outliers"] = [[] for _ in range(len(x))]
            return batch
        if self.settings.action == "count":
            return batch
        notes = [[self.names[j] for j in np.flatnonzero(row)] for row in mask]
        if detected is not None:
            for note, hit in zip(notes, detected.tolist()):
                if hit:
                    note.append("detector")
        if self.settings.action == "annotate":
            batch.extra["outliers"] = notes
            return batch
        for i in batch.live:
            lo, hi = batch.spans[i]
            bad = [(r - lo, notes[r]) for r in range(lo, hi) if notes[r]]
            if bad:
                index, names = bad[0]
                batch.fail(
                    i,
                    InvalidInstance(
                        f"instance {index}: outlier: {', '.join(map(repr, names))} outside the reference bounds "
                        f"({self.settings.method}, threshold {self.threshold:g})",
                        code="outlier",
                    ),
                )
        return batch
