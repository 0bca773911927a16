"""A trial run of a bundle as the server runs it: build the chain, load it, answer the examples.

``python -m serving.modules.trial BUNDLE RESULT [--memory-mb N]`` builds the module chain of
``BUNDLE/spec.json`` (:func:`serving.modules.build_modules`), loads it (the model's artifact is
checked against its sha256 and loaded as the server loads it), sends every request body of
``BUNDLE/examples.json`` through the chain and checks each answer, as a client would decode it,
against ``schema.outputs``. It writes ``RESULT`` as JSON: ``{"problem": null | "one line",
"examples": N}``. ``mlops validate-model`` runs it in a child process: loading a model runs its
code, so the toolkit's own process never does; the child bounds its address space itself
(``--memory-mb``, RLIMIT_AS) and the parent bounds its time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
from pathlib import Path
from typing import Any

from serving.errors import BundleError, one_line
from serving.spec import answer_problems, load_spec

EXAMPLES_FILE = "examples.json"


def limit_memory(megabytes: int) -> None:
    """Bound this process's address space: past it, allocations fail (MemoryError) instead of the host."""
    limit = megabytes * 1024 * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


async def run_trial(bundle_dir: Path, examples: list[Any]) -> str | None:
    """The first reason the server would refuse the bundle or an example, in one line; None when none."""
    from prometheus_client import CollectorRegistry

    from serving.jsonio import dumps
    from serving.metrics import Metrics
    from serving.modules import build_modules
    from serving.pipeline import Batch, ModuleContext, Pipeline

    spec = load_spec(bundle_dir)
    metrics = Metrics.create(CollectorRegistry())
    ctx = ModuleContext(spec, Path(bundle_dir), metrics)
    pipeline = Pipeline(build_modules(ctx), metrics.module_duration)
    await pipeline.load()
    for i, body in enumerate(examples):
        batch = await pipeline.process(Batch.of(json.dumps(body).encode()))
        error = batch.errors[0]
        if error is not None:
            return f"example {i}: the server answers {error.status} ({error.code}): {one_line(error.message)}"
        if batch.predictions[0] is None:
            return f"example {i}: no module produced predictions"
        answer = json.loads(dumps({"predictions": batch.predictions[0]}))
        instances = body.get("instances") if isinstance(body, dict) else None
        count = len(instances) if isinstance(instances, list) else 0
        problems = answer_problems(list(spec.io.outputs), answer, count)
        if problems:
            return f"example {i}: the answer does not match schema.outputs: {problems[0]}"
    return None


def trial(bundle_dir: Path, memory_mb: int | None = None) -> dict[str, Any]:
    """Run the trial; every failure becomes the result's one-line ``problem``."""
    examples: list[Any] = []
    try:
        if memory_mb:
            limit_memory(memory_mb)
        path = Path(bundle_dir) / EXAMPLES_FILE
        if path.is_file():
            examples = json.loads(path.read_text(encoding="utf-8")) or []
        problem = asyncio.run(run_trial(Path(bundle_dir), examples))
    except BundleError as exc:
        problem = one_line(exc)
    except MemoryError:
        problem = f"loading and running the model needs more than the memory bound of {memory_mb} MB"
    except Exception as exc:  # the model's own code: anything
        problem = f"{type(exc).__name__}: {one_line(exc)}"
    return {"problem": problem, "examples": len(examples)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.modules.trial", description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("result", type=Path)
    parser.add_argument("--memory-mb", type=int, default=None)
    args = parser.parse_args(argv)
    result = trial(args.bundle, args.memory_mb)
    tmp = args.result.with_name(f".{args.result.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(result), encoding="utf-8")
    os.replace(tmp, args.result)
    return 0


if __name__ == "__main__":
    # A process of its own (validate-model's child): no collections while importing and loading (as
    # the server starts, serving.__main__), and once RESULT is written nothing is left to do: it ends
    # at once instead of tearing down the interpreter with scikit-learn and scipy loaded (~0.1 s,
    # mostly the collector's last pass). In-process callers of main() are untouched.
    import gc

    gc.disable()
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
