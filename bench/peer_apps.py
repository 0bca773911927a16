"""The two peers the benchmark serves next to our runtime, each run by uvicorn in its own process.

``plain``: a plain FastAPI app doing the same predict (a pydantic body, ``predict_proba``, the
label and its probability per instance) on the same joblib model (``BENCH_MODEL``).
``raw``: a raw ASGI app that reads the body and returns a constant: the ceiling of
uvicorn on this machine.
"""

import os

RAW_BODY = b'{"predictions":[{"label":"benign","probability":0.99}]}'


def _plain_app():
    import joblib
    import numpy as np
    from fastapi import FastAPI
    from pydantic import BaseModel

    model = joblib.load(os.environ["BENCH_MODEL"])
    labels = os.environ.get("BENCH_LABELS", "").split(",")

    class PredictRequest(BaseModel):
        instances: list[list[float]]

    app = FastAPI()

    @app.post("/v1/predict")
    async def predict(request: PredictRequest) -> dict:
        proba = model.predict_proba(np.asarray(request.instances, dtype=float))
        best = proba.argmax(axis=1)
        return {"predictions": [{"label": labels[int(b)], "probability": float(p[b])} for b, p in zip(best, proba)]}

    return app


async def raw(scope, receive, send) -> None:
    if scope["type"] != "http":  # lifespan: accept startup and shutdown
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(RAW_BODY)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": RAW_BODY})


def __getattr__(name: str):
    if name == "plain":  # built on first access, so importing this file loads no model
        return _plain_app()
    raise AttributeError(name)
