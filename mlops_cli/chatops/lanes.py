"""Where queued work runs: bounded lanes of jobs, each with its own threads, and the service's metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self, registry: CollectorRegistry):
        self.requests = Counter(
            "mlops_chatops_requests_total",
            "Slack requests, by endpoint and outcome.",
            ["endpoint", "outcome"],
            registry=registry,
        )
        self.ack = Histogram(
            "mlops_chatops_ack_seconds",
            "Time from a Slack request's arrival to its answer.",
            ["endpoint"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5),
            registry=registry,
        )
        self.jobs = Counter(
            "mlops_chatops_jobs_total",
            "Queued jobs finished, by kind and outcome.",
            ["kind", "outcome"],
            registry=registry,
        )
        self.depth = Gauge("mlops_chatops_queue_depth", "Jobs waiting for a worker.", registry=registry)


@dataclass
class Job:
    kind: str
    run: Callable[[], None]


QUICK = ("reply", "status", "models", "decision")  # short jobs: never wait behind a release
QUICK_WORKERS = 2


class Lane:
    """A bounded job queue and the threads its jobs run in (its own: never the loop's default pool,
    which holds min(32, CPUs + 4) threads whoever asks)."""

    def __init__(self, name: str, maxsize: int, workers: int):
        self.name, self.workers = name, workers
        self.queue: asyncio.Queue[Job] = asyncio.Queue(maxsize=maxsize)  # bound to the loop on first use
        self.pool: ThreadPoolExecutor | None = None
