"""Drift: each watched numeric feature's values are counted in the bins of its reference quantiles.

Bins are right-closed intervals between the reference quantiles strictly inside (0, 1) (the
deciles, for the levels ``assemble-server`` writes); equal quantiles merge bins, and a bin's
reference share is the difference of the quantile levels at its edges. Counting is a few numpy
operations per batch (O(1) per row and feature). Exposed through one collector on the injected
registry: ``mlops_drift_observations_total{feature, bin, upper}`` and
``mlops_drift_reference_share{feature, bin, upper}``, so PSI over any window is one PromQL
expression (:data:`PSI_PROMQL`); ``GET /v1/drift`` reports PSI per feature since start.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from pydantic import BaseModel, ConfigDict, Field, field_validator

from serving.metrics import DRIFT_OBSERVATIONS, DRIFT_REFERENCE_SHARE
from serving.modules.reference import REFERENCE_FILE, FeatureReference, check_relative, load_reference, numeric_columns
from serving.pipeline import Batch, ModuleContext

EPSILON = 1e-4  # observed shares are clamped to this, so an empty bin does not make PSI infinite
_OBSERVED = (
    "clamp_min(sum by (feature, bin) (increase(mlops_drift_observations_total[{window}])) "
    "/ on (feature) group_left sum by (feature) (increase(mlops_drift_observations_total[{window}])), "
    f"{EPSILON})"
)
_REFERENCE = "max by (feature, bin) (mlops_drift_reference_share)"
PSI_PROMQL = (
    f"sum by (feature) (({_OBSERVED} - on (feature, bin) {_REFERENCE}) "
    f"* ln({_OBSERVED} / on (feature, bin) {_REFERENCE}))"
)


def bins(levels: tuple[float, ...], ref: FeatureReference) -> tuple[list[float], list[float]]:
    """Upper edges (the last bin is unbounded) and reference shares of one feature's bins."""
    edges: list[float] = []
    cumulative: list[float] = []
    for level, q in zip(levels[1:-1], ref.quantiles[1:-1]):
        if edges and q == edges[-1]:
            cumulative[-1] = level  # a tie: the bin up to q holds every level tied at q
        else:
            edges.append(q)
            cumulative.append(level)
    shares = [b - a for a, b in zip([0.0, *cumulative], [*cumulative, 1.0])]
    return edges, shares


def psi(observed: list[int], shares: list[float]) -> float | None:
    total = sum(observed)
    if total == 0:
        return None
    return float(
        sum((max(o / total, EPSILON) - s) * math.log(max(o / total, EPSILON) / s) for o, s in zip(observed, shares))
    )


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    features: list[str] | None = Field(default=None, min_length=1)
    reference: str = REFERENCE_FILE

    @field_validator("reference")
    @classmethod
    def _inside_bundle(cls, value: str) -> str:
        return check_relative(value)


DriftSettings = Settings  # the name the module class's methods annotate with (its own `Settings` attribute is a value)


class Drift:
    name = "drift"
    Settings = Settings

    def __init__(self, ctx: ModuleContext, settings: DriftSettings):
        self.ctx = ctx
        self.settings = settings

    async def load(self) -> None:
        reference = load_reference(self.ctx.bundle_dir, self.settings.reference, "drift")
        watched = numeric_columns(self.ctx, reference, self.settings.features, "drift")
        columns = [c for c, _ in watched]
        self.columns = None if columns == list(range(len(self.ctx.spec.io.inputs))) else np.array(columns)
        self.names = [n for _, n in watched]
        per_feature = [bins(reference.levels, reference.features[n]) for n in self.names]
        self.edges = [e for e, _ in per_feature]
        self.shares = [s for _, s in per_feature]
        width = max(len(s) for s in self.shares)
        self.width = width
        padded = np.full((len(self.names), max(width - 1, 1)), np.inf)
        for f, e in enumerate(self.edges):
            padded[f, : len(e)] = e
        self.edges_by_rank = np.ascontiguousarray(padded.T)  # (edge rank, feature); +inf pads
        self.offsets = np.arange(len(self.names)) * width
        self.counts = np.zeros(len(self.names) * width, dtype=np.int64)
        self.ctx.metrics.registry.register(self)
        self.ctx.shared["drift_report"] = self.report

    async def process(self, batch: Batch) -> Batch:
        features = batch.features
        assert features is not None, "preprocessing must run before drift"
        x = features if self.columns is None else features[:, self.columns]
        if x.dtype != np.float64:
            x = x.astype(np.float64)
        index = np.empty(x.shape, dtype=np.int64)
        index[:] = self.offsets
        for edge in self.edges_by_rank:  # one comparison per bin edge, over every row and feature
            index += x > edge
        self.counts += np.bincount(index.ravel(), minlength=self.counts.size)
        return batch

    def _observed(self, f: int) -> list[int]:
        return self.counts[f * self.width : f * self.width + len(self.shares[f])].tolist()

    def _labels(self, f: int) -> list[tuple[str, str]]:
        uppers = [repr(e) for e in self.edges[f]] + ["+Inf"]
        return [(str(b), upper) for b, upper in enumerate(uppers)]

    def describe(self) -> list[Any]:
        return [
            CounterMetricFamily(DRIFT_OBSERVATIONS.removesuffix("_total"), "", labels=["feature", "bin", "upper"]),
            GaugeMetricFamily(DRIFT_REFERENCE_SHARE, "", labels=["feature", "bin", "upper"]),
        ]

    def collect(self) -> list[Any]:
        observations = CounterMetricFamily(
            DRIFT_OBSERVATIONS.removesuffix("_total"),
            "Values seen per feature, by reference-quantile bin.",
            labels=["feature", "bin", "upper"],
        )
        shares = GaugeMetricFamily(
            DRIFT_REFERENCE_SHARE, "Share of the reference data in each bin.", labels=["feature", "bin", "upper"]
        )
        for f, name in enumerate(self.names):
            for (b, upper), count, share in zip(self._labels(f), self._observed(f), self.shares[f]):
                observations.add_metric([name, b, upper], count)
                shares.add_metric([name, b, upper], share)
        return [observations, shares]

    def report(self) -> dict[str, Any]:
        """PSI per feature over everything counted since the server started."""
        features = {}
        for f, name in enumerate(self.names):
            observed = self._observed(f)
            total = sum(observed)
            features[name] = {
                "psi": psi(observed, self.shares[f]),
                "observations": total,
                "bins": [
                    {
                        "upper": upper if upper == "+Inf" else float(upper),
                        "reference_share": share,
                        "observed_share": (count / total) if total else None,
                    }
                    for (_, upper), count, share in zip(self._labels(f), observed, self.shares[f])
                ],
            }
        return {
            "window": "since the server started",
            "psi_promql": PSI_PROMQL.format(window="1h"),
            "features": features,
        }
