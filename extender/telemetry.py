"""The Prometheus metrics every layer counts into: requests, rejections, admissions, reloads.

Definitions only, so that the cluster state, the feeds, the scheduler verbs, the webhook
and the loops can count without importing the HTTP server; the server's scrape
(:mod:`extender.server.metrics`) adds the state read at scrape time and serves them.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

# ``*_created`` series double the output for a timestamp nobody here alerts on.
disable_created_metrics()

PREFIX = "machine_catalog_"

#: From a cheap /healthz (~100 µs) to a 15,000-node full-Nodes filter (~1 s).
LATENCY_BUCKETS = (
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

ADMISSION_DECISIONS = ("mutated", "skipped", "denied", "error")

HTTP_REQUESTS = Counter(
    PREFIX + "http_requests",
    "HTTP requests answered, by route and status code.",
    ["route", "code"],
)
HTTP_DURATION = Histogram(
    PREFIX + "http_request_duration_seconds",
    "Time to answer an HTTP request, by route.",
    ["route"],
    buckets=LATENCY_BUCKETS,
)
FILTER_REJECTIONS = Counter(
    PREFIX + "filter_rejections",
    "Nodes /scheduler/filter rejected, by reason.",
    ["reason"],
)
#: The webhook counts its decisions here: ``ADMISSIONS.labels(decision="mutated").inc()``.
ADMISSIONS = Counter(
    PREFIX + "admissions",
    "Pods the admission webhook handled, by decision (mutated, skipped, denied, error).",
    ["decision"],
)
BAD_VALUES = Counter(
    PREFIX + "cache_bad_values",
    "Watched pods and nodes whose CPU the cache could not use as it is (each object counted "
    "once), by kind (pod, node) and problem (unparsable: counted as 0; out_of_range: bounded "
    "to 10^6 cores).",
    ["kind", "problem"],
)
CATALOG_INFO = Gauge(
    PREFIX + "catalog_info",
    "1 for the catalog version (name, content hash) the server serves; 0 once replaced.",
    ["name", "hash"],
)
CATALOG_RELOADS = Counter(
    PREFIX + "catalog_reloads",
    "Catalog versions swapped in (per worker process: each worker watches the file).",
)
CATALOG_RELOAD_FAILURES = Counter(
    PREFIX + "catalog_reload_failures",
    "Catalog files refused because they failed validation (per worker process).",
)

#: The stranded-pod loop (:mod:`extender.loops.recreation`): deletions by outcome (recreated,
#: conflict: the pod changed or another replica acted first, gone, error).
RECREATION_OUTCOMES = ("recreated", "conflict", "gone", "error")
RECREATIONS = Counter(
    PREFIX + "stranded_pod_recreations",
    "Pods stranded on a full family that the server deleted so their controller re-creates "
    "them, by outcome (recreated, conflict, gone, error).",
    ["outcome"],
)
STRANDED_PODS = Gauge(
    PREFIX + "stranded_pods",
    "Pods in the last cycle that waited past --recreate-stranded-after on a full family while "
    "another allowed family had room (re-created or rate limited); the most any live worker "
    "saw.",
)
for _outcome in RECREATION_OUTCOMES:
    RECREATIONS.labels(outcome=_outcome)
#: The leader's family labels on nodes (:mod:`extender.loops.labelling`), by outcome.
NODE_LABELS = Counter(
    PREFIX + "node_label_patches",
    "Node family-label patches by outcome (set, removed, gone, error).",
    ["outcome"],
)
for _outcome in ("set", "removed", "gone", "error"):
    NODE_LABELS.labels(outcome=_outcome)
#: Polls of metrics.k8s.io NodeMetrics and reads of ``--node-metrics`` (``loadAware``).
NODE_METRICS_POLLS = Counter(
    PREFIX + "node_metrics_polls",
    "Node usage polls (metrics.k8s.io) or metrics-file reads, by outcome (ok, unavailable, error).",
    ["outcome"],
)

# Children created up front: every reason and decision exists from the first scrape (0),
# so rate() and alerts work before the first event; and the hot path skips labels().
for _decision in ADMISSION_DECISIONS:
    ADMISSIONS.labels(decision=_decision)
for _outcome in ("ok", "unavailable", "error"):
    NODE_METRICS_POLLS.labels(outcome=_outcome)
