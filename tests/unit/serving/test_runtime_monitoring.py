"""The outlier and drift modules: defaults that read reference.json, per-feature counts, the
three outlier actions, reference-quantile bins with PSI, and one-line refusals at startup."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from serving_bundles import IRIS_FEATURES, IRIS_LABELS, iris_reference, sha256_file, write_bundle

from serving.app import create_app
from serving.errors import BundleError
from serving.modules.drift import bins, psi
from serving.modules.reference import FeatureReference
from serving.spec import load_spec

pytestmark = pytest.mark.anyio
CHAIN = ["preprocessing", "outlier", "drift", "model", "postprocessing"]
TYPICAL = [5.1, 3.5, 1.4, 0.2]
HUGE_PETAL = [5.1, 3.5, 40.0, 0.2]  # petal length far beyond the reference


def _bundle(tmp_path: Path, model, reference="iris", **settings) -> Path:
    ref = iris_reference() if reference == "iris" else reference
    return write_bundle(
        tmp_path / "b",
        model,
        labels=IRIS_LABELS,
        modules=CHAIN,
        reference=ref,
        settings={"postprocessing": {"labels": IRIS_LABELS}, **settings},
    )


async def test_defaults_count_outliers_and_keep_the_response_schema(tmp_path, iris_model, served) -> None:
    async with served(_bundle(tmp_path, iris_model)) as s:
        r = await s.client.post("/v1/predict", json={"instances": [TYPICAL, HUGE_PETAL, HUGE_PETAL]})
        reg = s.registry
    assert r.status_code == 200 and all(set(p) == {"label", "probability"} for p in r.json()["predictions"])
    assert reg.get_sample_value("mlops_outliers_total", {"feature": "petal_length_cm"}) == 2
    assert reg.get_sample_value("mlops_outliers_total", {"feature": "sepal_length_cm"}) == 0
    assert reg.get_sample_value("mlops_outlier_instances_total", {"reason": "bounds"}) == 2


async def test_annotate_lists_the_outlying_features(tmp_path, iris_model, served) -> None:
    bundle = _bundle(tmp_path, iris_model, outlier={"action": "annotate", "method": "iqr", "threshold": 1.5})
    async with served(bundle) as s:
        r = await s.client.post("/v1/predict", json={"instances": [TYPICAL, [5.1, 9.0, 40.0, 0.2]]})
    assert [p["outliers"] for p in r.json()["predictions"]] == [[], ["sepal_width_cm", "petal_length_cm"]]


async def test_reject_answers_422_for_that_request_only(tmp_path, iris_model, served) -> None:
    async with served(_bundle(tmp_path, iris_model, outlier={"action": "reject"})) as s:
        bad = await s.client.post("/v1/predict", json={"instances": [TYPICAL, HUGE_PETAL]})
        good = await s.client.post("/v1/predict", json={"instances": [TYPICAL]})
    assert bad.status_code == 422 and good.status_code == 200
    error = bad.json()["error"]
    assert error["code"] == "outlier"
    assert (
        error["message"] == "instance 1: outlier: 'petal_length_cm' outside the reference bounds (zscore, threshold 4)"
    )


async def test_scaling_from_stored_parameters_feeds_the_model_while_monitors_see_raw_values(tmp_path, served) -> None:
    """A model fitted on standardized features, served with the scaler's stored mean_ and scale_."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    features, target = load_iris(return_X_y=True)
    scaler = StandardScaler().fit(features)
    model = LogisticRegression(max_iter=1000).fit(scaler.transform(features), target)
    scale = {
        name: {"center": float(c), "scale": float(s)} for name, c, s in zip(IRIS_FEATURES, scaler.mean_, scaler.scale_)
    }
    bundle = _bundle(tmp_path, model, preprocessing={"scale": scale}, outlier={"action": "reject"})
    rows = features[::7]
    async with served(bundle) as s:
        r = await s.client.post("/v1/predict", json={"instances": rows.tolist()})
        outlying = await s.client.post("/v1/predict", json={"instances": [HUGE_PETAL]})
        drift = (await s.client.get("/v1/drift")).json()
    assert r.status_code == 200, r.text  # raw rows are no outliers: the monitors see raw values
    assert [p["label"] for p in r.json()["predictions"]] == [
        IRIS_LABELS[i] for i in model.predict(scaler.transform(rows))
    ]
    assert outlying.status_code == 422
    petal = drift["features"]["petal_length_cm"]
    # training rows binned in raw units spread over the bins (scaled values would all fall in the first)
    assert petal["observations"] == len(rows)
    assert max(b["observed_share"] for b in petal["bins"]) < 0.5


async def test_a_detector_artifact_flags_whole_instances(tmp_path, iris_model, served) -> None:
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.ensemble import IsolationForest

    bundle = _bundle(tmp_path, iris_model)
    detector = IsolationForest(random_state=0).fit(load_iris().data)
    joblib.dump(detector, bundle / "model" / "detector.joblib")
    settings = {
        "action": "annotate",
        "detector": "model/detector.joblib",
        "detector_sha256": sha256_file(bundle / "model" / "detector.joblib"),
    }
    bundle = _bundle(tmp_path, iris_model, outlier=settings)
    joblib.dump(detector, bundle / "model" / "detector.joblib")
    odd = [7.9, 2.0, 1.0, 2.5]  # inside every per-feature bound, unlike any iris flower
    async with served(bundle) as s:
        r = await s.client.post("/v1/predict", json={"instances": [TYPICAL, odd]})
        flagged = s.registry.get_sample_value("mlops_outlier_instances_total", {"reason": "detector"})
    assert [p["outliers"] for p in r.json()["predictions"]] == [[], ["detector"]]
    assert flagged == 1


async def _startup_error(bundle: Path) -> str:
    app = create_app(load_spec(bundle), bundle, CollectorRegistry())
    with pytest.raises(BundleError) as err:
        async with app.router.lifespan_context(app):
            pass
    assert "\n" not in str(err.value)
    return str(err.value)


@pytest.mark.parametrize("reference", [None, "absent"])
async def test_without_reference_statistics_the_modules_refuse_to_start(tmp_path, iris_model, reference) -> None:
    message = await _startup_error(_bundle(tmp_path, iris_model, reference=reference))
    assert message.startswith("outlier: the bundle has no reference statistics (reference.json is missing or null)")


async def test_a_tampered_detector_is_refused(tmp_path, iris_model) -> None:
    bundle = _bundle(tmp_path, iris_model, outlier={"detector": "model/d.joblib", "detector_sha256": "0" * 64})
    (bundle / "model" / "d.joblib").write_bytes(b"not a detector")
    assert "outlier.detector: model artifact model/d.joblib sha256 mismatch" in await _startup_error(bundle)


async def test_watching_a_feature_without_reference_is_refused(tmp_path, iris_model) -> None:
    reference = iris_reference()
    del reference["features"]["petal_width_cm"]
    bundle = _bundle(tmp_path, iris_model, reference=reference, drift={"features": ["petal_width_cm"]})
    assert await _startup_error(bundle) == "drift.features: 'petal_width_cm' has no reference statistics"


def test_bins_merge_tied_quantiles_and_shares_sum_to_one() -> None:
    levels = tuple(i / 10 for i in range(11))
    ref = FeatureReference(10, 0, 1, 0, 9, (0, 1, 2, 2, 2, 5, 6, 7, 8, 9, 9))
    edges, shares = bins(levels, ref)
    assert edges == [1, 2, 5, 6, 7, 8, 9]
    assert shares == pytest.approx([0.1, 0.3, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1])
    assert psi([10, 30, 10, 10, 10, 10, 10, 10], shares) == pytest.approx(0)
    assert psi([0] * 8, shares) is None
    assert psi([100, 0, 0, 0, 0, 0, 0, 0], shares) > 1


async def test_drift_counts_each_value_in_its_reference_bin(tmp_path, iris_model, served) -> None:
    rng = np.random.default_rng(3)
    rows = rng.uniform([4.3, 2.0, 1.0, 0.1], [7.9, 4.4, 6.9, 2.5], size=(40, 4)).round(2)
    reference = iris_reference()
    async with served(_bundle(tmp_path, iris_model)) as s:
        for chunk in np.array_split(rows, 4):
            assert (await s.client.post("/v1/predict", json={"instances": chunk.tolist()})).status_code == 200
        report = (await s.client.get("/v1/drift")).json()
        reg = s.registry
    for j, name in enumerate(IRIS_FEATURES):
        edges, shares = bins(
            tuple(reference["quantile_levels"]),
            FeatureReference(
                **{k: v for k, v in reference["features"][name].items() if k != "quantiles"},
                quantiles=tuple(reference["features"][name]["quantiles"]),
            ),
        )
        expected = np.bincount(np.searchsorted(edges, rows[:, j], side="left"), minlength=len(shares)).tolist()
        got = [
            reg.get_sample_value(
                "mlops_drift_observations_total",
                {"feature": name, "bin": str(b), "upper": repr(e) if b < len(edges) else "+Inf"},
            )
            for b, e in enumerate([*edges, math.inf])
        ]
        assert got == expected
        assert sum(
            reg.get_sample_value(
                "mlops_drift_reference_share",
                {"feature": name, "bin": str(b), "upper": repr(e) if b < len(edges) else "+Inf"},
            )
            for b, e in enumerate([*edges, math.inf])
        ) == pytest.approx(1)
        feature = report["features"][name]
        assert feature["observations"] == 40
        assert feature["psi"] == pytest.approx(psi(expected, shares))
    assert "mlops_drift_observations_total" in report["psi_promql"]


async def test_drift_route_without_the_module_is_404(iris) -> None:
    r = await iris.client.get("/v1/drift")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


async def test_openapi_names_the_real_features(iris) -> None:
    doc = (await iris.client.get("/openapi.json")).json()
    row = doc["components"]["schemas"]["PredictRequest"]["properties"]["instances"]["items"]["oneOf"][0]
    assert list(row["properties"]) == IRIS_FEATURES and row["required"] == IRIS_FEATURES
    assert set(doc["paths"]) >= {"/v1/predict", "/v1/schema", "/v1/drift", "/health/live", "/health/ready"}
    json.dumps(doc)
