"""Anti-herding counts only what a usage sample does not hold yet: a pod bound inside the
sample's window counts by the share of the window it was not yet running (issue: a pod
bound half-way through a window counted at its whole request on top of the half the sample
already held)."""

from __future__ import annotations

import pytest

from extender.state.usage import UsageSample, unseen_millis

# A sample averaged over the 30 s ending at t = 100.
SAMPLE = UsageSample(millis=4000, at=100.0, window=30.0)


@pytest.mark.parametrize(
    ("bound_at", "sample", "expected"),
    [
        (110.0, SAMPLE, 1000),  # bound after the window: nothing of it in the sample
        (100.0, SAMPLE, 1000),  # at the window's end: still nothing
        (85.0, SAMPLE, 500),  # half-way: the sample holds half of it
        (79.0, SAMPLE, 300),  # 9 s of 30 not running: ceil(1000 * 9 / 30)
        (70.0, SAMPLE, 0),  # ran through the whole window: all in the sample
        (60.0, SAMPLE, 0),  # bound before the window
        (85.0, None, 1000),  # no sample: the request is the load
        (85.0, UsageSample(millis=4000, at=100.0, window=0.0), 1000),  # no window known
    ],
)
def test_the_part_of_a_request_a_sample_does_not_hold(bound_at, sample, expected):
    assert unseen_millis(bound_at, 1000, sample) == expected


def test_the_cache_counts_a_pod_bound_mid_window_by_its_unseen_share():
    from extender.state.cluster import ClusterState
    from machine_catalog.loading import parse_catalog

    catalog = parse_catalog(
        """
apiVersion: machine-catalog.io/v1alpha1
kind: MachineCatalog
metadata: {name: unseen}
spec:
  baseline: std
  scoring: {strategy: loadAware}
  families:
    - {name: std, scuPerCore: 1.0, instanceTypes: [std.large]}
"""
    )
    node = {
        "metadata": {"name": "n", "labels": {"node.kubernetes.io/instance-type": "std.large"}},
        "status": {"allocatable": {"cpu": "8"}},
    }
    pod = {
        "metadata": {"uid": "u1", "namespace": "x", "name": "p"},
        "spec": {
            "nodeName": "n",
            "containers": [{"name": "c", "resources": {"requests": {"cpu": "1"}}}],
        },
        "status": {"phase": "Running"},
    }
    state = ClusterState(catalog)
    state.replace([node], [])
    state.usage_clock = lambda: 85.0  # the binding, half-way through the window below
    state.apply("Pod", "ADDED", pod)
    state.set_usage({"n": SAMPLE})
    view = state.view(["n"], usage=True)
    assert view.usage is not None
    assert int(view.usage.unseen_scu[0]) == 500  # half of its 1000m, not all of it
