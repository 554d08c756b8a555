"""Serving: the app's Prometheus metrics, on a registry of its own (two apps in one process never share counts)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

if TYPE_CHECKING:
    from optikit.serve.app import Service

# Seconds per inference call: from a tiny CNN's tenth of a millisecond to a transformer batch's seconds.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def _known(value: float | None) -> float:
    return float("nan") if value is None else value


class ServeMetrics:
    """Counters the app increments, and gauges read from the service when /metrics is scraped."""

    def __init__(self, service: Service) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("optikit_requests", "Answered /predict requests, by the arm that answered",
                                ["arm"], registry=r)
        self.latency = Histogram("optikit_inference_seconds", "Inference time of one call, by model",
                                 ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.examples = Counter("optikit_inference_examples", "Examples run, by model", ["model"], registry=r)
        self.dropped = Counter("optikit_shadow_dropped", "Mirrored calls dropped because the queue was full "
                               "(this process; /health has the log's total)", registry=r)
        self.candidate_errors = Counter("optikit_candidate_errors", "Examples the candidate failed on", registry=r)
        Gauge("optikit_shadow_queue_depth", "Mirrored calls waiting", registry=r).set_function(
            lambda: float(service.queue.qsize()) if service.queue is not None else 0.0)
        Gauge("optikit_agreement", "Share of mirrored examples where both models gave the same label",
              registry=r).set_function(lambda: _known(service.agreement()))
        Gauge("optikit_compared", "Examples both models answered", registry=r).set_function(
            lambda: float(service.compared))
        accuracy = Gauge("optikit_feedback_accuracy", "Accuracy on feedback labels, by the arm that answered",
                         ["arm"], registry=r)
        labelled = Gauge("optikit_feedback_labels", "Feedback labels received, by the arm that answered",
                         ["arm"], registry=r)
        for arm in ("baseline", "candidate"):
            accuracy.labels(arm).set_function(lambda arm=arm: _known(service.accuracy(arm)))  # type: ignore[misc]
            labelled.labels(arm).set_function(lambda arm=arm: float(service.feedback_counts[arm][1]))  # type: ignore[misc]
        Gauge("optikit_candidate_percent", "Share of users the candidate serves now (canary, A/B)",
              registry=r).set_function(lambda: float(service.router.state().percent))

    def observe_inference(self, model: str, ms_per_example: float, examples: int) -> None:
        self.latency.labels(model).observe(ms_per_example * examples / 1000.0)
        self.examples.labels(model).inc(examples)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
