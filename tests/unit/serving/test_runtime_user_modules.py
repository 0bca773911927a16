"""User modules: a Python file in the bundle, named in the chain by dotted path, runs like a
built-in (own settings, timed under its name); every mistake is refused in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from serving_bundles import IRIS_LABELS, edit_spec, write_bundle

from serving.app import create_app
from serving.errors import BundleError
from serving.spec import load_spec

pytestmark = pytest.mark.anyio

CLIP = '''
from pydantic import BaseModel
import numpy as np


class Clip:
    """Clips every feature to [low, high] before the model."""

    class Settings(BaseModel):
        low: float
        high: float

    def __init__(self, ctx, settings):
        self.low, self.high = settings.low, settings.high

    async def load(self):
        pass

    async def process(self, batch):
        batch.features = np.clip(batch.features, self.low, self.high)
        return batch
'''


def _bundle(
    tmp_path: Path, iris_model, source: str = CLIP, name: str = "extras.clip.Clip", settings: dict | None = None
) -> Path:
    bundle = write_bundle(
        tmp_path / "b",
        iris_model,
        labels=IRIS_LABELS,
        modules=["preprocessing", name, "model", "postprocessing"],
        settings={name: {"low": 0.5, "high": 2.0} if settings is None else settings},
    )
    (bundle / "extras").mkdir()
    (bundle / "extras" / "clip.py").write_text(source)
    return bundle


async def test_a_user_module_runs_in_the_chain(tmp_path: Path, iris_model, served) -> None:
    rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
    async with served(_bundle(tmp_path, iris_model)) as s:
        r = await s.client.post("/v1/predict", json={"instances": rows})
        timed = s.registry.get_sample_value("mlops_module_duration_seconds_count", {"module": "extras.clip.Clip"})
    expected = iris_model.predict(np.clip(np.array(rows), 0.5, 2.0))
    assert [p["label"] for p in r.json()["predictions"]] == [IRIS_LABELS[c] for c in expected]
    assert timed == 1


def _refusal(bundle: Path) -> str:
    with pytest.raises(BundleError) as err:
        create_app(load_spec(bundle), bundle, CollectorRegistry())
    assert "\n" not in str(err.value)
    return str(err.value)


def test_user_module_mistakes_are_one_line(tmp_path: Path, iris_model) -> None:
    bundle = _bundle(tmp_path, iris_model)
    assert "settings.high: Field required" in _refusal(_bundle(tmp_path / "1", iris_model, settings={"low": 1}))
    assert _refusal(_bundle(tmp_path / "2", iris_model, name="extras.clip.Nope")).endswith(
        "user module 'extras.clip.Nope': extras/clip.py defines no class 'Nope'"
    )
    assert "failed to load: ZeroDivisionError: division by zero" in _refusal(
        _bundle(tmp_path / "3", iris_model, source="1 / 0\n")
    )
    edit_spec(bundle, lambda d: d["modules"].__setitem__(1, {"name": "os.path.join"}))
    assert _refusal(bundle).endswith("user module 'os.path.join': no file os/path.py in the bundle")
