"""A stand-in for the kubelet's status reporting: bound pods become Running and Ready.

Nodes here have no kubelet. Controllers that wait for readiness (Deployments rolling, the
HPA counting ready pods) need pods to get there, so this loop writes the status a kubelet
would: phase Running, a start time, Ready and ContainersReady conditions, one running
status per container. It reports each container's resources as allocated at start (as a
kubelet with in-place resize does) and nothing else: no resize is ever actuated, so a
resized pod's status keeps its old values; tests that need more write the status
themselves.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from typing import Any

log = logging.getLogger(__name__)


def running_status(pod: Any) -> dict[str, Any]:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    containers = [
        {
            "name": c.name,
            "image": c.image,
            "imageID": "",
            "ready": True,
            "started": True,
            "restartCount": 0,
            "state": {"running": {"startedAt": now}},
            # What a kubelet with in-place resize (GA in 1.35) reports; the API server
            # accepts pods/resize only for pods whose running containers report it.
            "resources": _resources(c),
            "allocatedResources": (_resources(c).get("requests") or {}),
        }
        for c in pod.spec.containers
    ]
    conditions = [
        {"type": t, "status": "True", "lastTransitionTime": now}
        for t in ("Initialized", "PodScheduled", "ContainersReady", "Ready")
    ]
    return {
        "status": {
            "phase": "Running",
            "startTime": now,
            "hostIP": "10.213.9.1",
            "podIP": "10.213.9.2",
            "conditions": conditions,
            "containerStatuses": containers,
        }
    }


def _resources(container: Any) -> dict[str, Any]:
    res = container.resources
    out: dict[str, Any] = {}
    if res is not None and res.requests:
        out["requests"] = dict(res.requests)
    if res is not None and res.limits:
        out["limits"] = dict(res.limits)
    return out


class FakeKubelet:
    """Marks every bound, Pending pod Running and Ready, until stopped."""

    def __init__(self, api_client: Any) -> None:
        from kubernetes import client

        self.api = client.CoreV1Api(api_client)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fake-kubelet", daemon=True)
        self.started = 0

    def start(self) -> FakeKubelet:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        from kubernetes import watch

        while not self._stop.is_set():
            try:
                stream = watch.Watch().stream(
                    self.api.list_pod_for_all_namespaces,
                    field_selector="spec.nodeName!=,status.phase=Pending",
                    timeout_seconds=5,
                )
                for event in stream:
                    if self._stop.is_set():
                        return
                    pod = event["object"]
                    if event["type"] == "DELETED" or pod.metadata.deletion_timestamp:
                        continue
                    self._mark_running(pod)
            except Exception as exc:  # the API server may be restarting; keep going
                if not self._stop.is_set():
                    log.debug("fake kubelet watch: %s", exc)
                    self._stop.wait(0.5)

    def _mark_running(self, pod: Any) -> None:
        try:
            self.api.patch_namespaced_pod_status(
                pod.metadata.name, pod.metadata.namespace, running_status(pod)
            )
            self.started += 1
        except Exception as exc:  # deleted meanwhile
            log.debug("fake kubelet patch %s: %s", pod.metadata.name, exc)
