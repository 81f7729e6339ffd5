"""Prometheus metrics of one app (its own CollectorRegistry, so several apps in one process do not mix).

fovea_serve_latency_seconds{model, stage}: histogram per stage of a prediction request:
  decode (bytes -> image), queue (waiting for a batch), infer (the batch's predict call),
  render (overlay PNG), total (request in -> response out).
fovea_serve_batch_size{model}: images per predict call.
fovea_serve_queue_depth{model}: images waiting now.
fovea_serve_requests_total{model, code}: answered prediction requests by HTTP status.
fovea_serve_rejected_total{reason}: requests refused (queue_full, too_large, bad_image,
  unsupported_type, unauthorized, unknown_model, bad_name).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STAGES = ("decode", "queue", "infer", "render", "total")


class ServeMetrics:
    """The app's metrics; `text()` is the /metrics body."""

    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.latency = Histogram("fovea_serve_latency_seconds", "Prediction latency per model and stage",
                                 ("model", "stage"), buckets=LATENCY_BUCKETS_S, registry=r)
        self.batch_size = Histogram("fovea_serve_batch_size", "Images per predict call", ("model",),
                                    buckets=(1, 2, 4, 8, 16, 32, 64), registry=r)
        self.queue_depth = Gauge("fovea_serve_queue_depth", "Images waiting for a batch", ("model",), registry=r)
        self.requests = Counter("fovea_serve_requests_total", "Prediction requests answered", ("model", "code"),
                                registry=r)
        self.rejected = Counter("fovea_serve_rejected_total", "Requests refused, by reason", ("reason",),
                                registry=r)

    def observe_batch(self, model: str, jobs) -> None:
        """Queue and infer time of each job of one finished batch (see batcher.Job)."""
        self.batch_size.labels(model).observe(len(jobs))
        for j in jobs:
            self.latency.labels(model, "queue").observe(j.t_started - j.t_enqueued)
            self.latency.labels(model, "infer").observe(j.t_done - j.t_started)

    def text(self) -> bytes:
        return generate_latest(self.registry)
