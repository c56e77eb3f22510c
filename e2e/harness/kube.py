"""Small waits and reads the end-to-end tests share (the kubernetes client does the rest)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def eventually(fetch: Callable[[], T], ok: Callable[[T], bool], timeout: float, what: str) -> T:
    """Poll ``fetch`` until ``ok`` holds; fail with the last value seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = fetch()
        if ok(last):
            return last
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:.0f} s waiting for {what}; last: {last}"
            )
        time.sleep(0.25)


def bound(api: Any, namespace: str, name: str, timeout: float = 60) -> Any:
    """The pod once kube-scheduler has bound it (``spec.nodeName`` set)."""
    return eventually(
        lambda: api.read_namespaced_pod(name, namespace),
        lambda p: bool(p.spec.node_name),
        timeout,
        f"{namespace}/{name} bound",
    )


def pod_manifest(
    name: str,
    cpu: str = "1",
    *,
    annotations: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    scheduler: str | None = None,
    memory: str = "64Mi",
    **spec: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations or {}, "labels": labels or {}},
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "image": "registry.k8s.io/pause:3.10",
                    "resources": {"requests": {"cpu": cpu, "memory": memory}},
                }
            ],
            "terminationGracePeriodSeconds": 0,
            **spec,
        },
    }
    if scheduler:
        body["spec"]["schedulerName"] = scheduler
    return body


def cpu_requests(pod: Any) -> list[str]:
    return [c.resources.requests["cpu"] for c in pod.spec.containers]


def failed_scheduling(
    api: Any, namespace: str, name: str, what: str, timeout: float = 30
) -> list[Any]:
    """The pod's FailedScheduling events, once kube-scheduler has recorded one."""
    return eventually(
        lambda: events_for(api, namespace, name, "FailedScheduling"), bool, timeout, what
    )


def events_for(api: Any, namespace: str, name: str, reason: str | None = None) -> list[Any]:
    items = api.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}").items
    return [e for e in items if reason is None or e.reason == reason]


def recreated_pod(api: Any, namespace: str, selector: str, gone_uid: str, timeout: float) -> Any:
    """The one pod ``selector`` matches once it is not the pod ``gone_uid`` and is bound: a
    controller's re-creation of a deleted pod, scheduled."""
    return eventually(
        lambda: api.list_namespaced_pod(namespace, label_selector=selector).items,
        lambda items: (
            len(items) == 1 and items[0].metadata.uid != gone_uid and bool(items[0].spec.node_name)
        ),
        timeout,
        "the controller's pod re-created and bound",
    )[0]
