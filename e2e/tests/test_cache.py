"""The watch-fed cache against the real API server: node add and delete, pods bound and
gone, and a forced relist after the API server restarts on a compacted etcd.

What the cache holds is read the way kube-scheduler reads it: through ``/scheduler/filter``.
The nodes made here are aws-m6a (1.15 SCU per vCPU), a family no other test uses.
Each check asks several times, so that both gunicorn workers (each has its own cache) answer.
"""

from __future__ import annotations

import os
import signal
import time

from harness import objects
from harness.controlplane import process_tree
from harness.kube import eventually, pod_manifest

FAMILY = "machine-catalog.io/family"
NOT_IN_CACHE = "not in the extender's cluster cache"


def filter_verdict(server, node: str, cpu: str = "100m") -> str:
    """'pass', or the reason the extender gives for ``node``, asked of every worker."""
    pod = pod_manifest("probe", cpu, annotations={FAMILY: "aws-m6a"})
    pod["metadata"]["namespace"] = "probe"
    answers = set()
    for _ in range(6):
        result = server.post("/scheduler/filter", {"Pod": pod, "NodeNames": [node]})
        if node in (result.get("NodeNames") or []):
            answers.add("pass")
        else:
            reasons = {
                **(result.get("FailedNodes") or {}),
                **(result.get("FailedAndUnresolvableNodes") or {}),
            }
            answers.add(reasons.get(node, "?"))
    return answers.pop() if len(answers) == 1 else f"workers disagree: {sorted(answers)}"


def test_nodes_added_and_deleted_reach_the_cache(api, server):
    assert NOT_IN_CACHE in filter_verdict(server, "cache-n1")
    objects.create_nodes(
        server.plane, [objects.node("cache-n1", {objects.INSTANCE_TYPE: "m6a.2xlarge"})]
    )
    eventually(lambda: filter_verdict(server, "cache-n1"), lambda v: v == "pass", 20, "node added")
    api.delete_node("cache-n1")
    eventually(
        lambda: filter_verdict(server, "cache-n1"), lambda v: NOT_IN_CACHE in v, 20, "node deleted"
    )


def test_bound_pods_take_room_and_give_it_back(api, server, kubelet):
    objects.create_nodes(
        server.plane, [objects.node("cache-n2", {objects.INSTANCE_TYPE: "m6a.2xlarge"})]
    )
    eventually(lambda: filter_verdict(server, "cache-n2", "4"), lambda v: v == "pass", 20, "room")
    api.create_namespace({"metadata": {"name": "cache-binding"}})
    api.create_namespaced_pod("cache-binding", pod_manifest("resident", "6", nodeName="cache-n2"))
    verdict = eventually(
        lambda: filter_verdict(server, "cache-n2", "4"), lambda v: v != "pass", 20, "room taken"
    )
    # 4000m and the 2000m left of 8000m, at 1.15 SCU per vCPU.
    assert "needs 4.6 SCU" in verdict and "2.3 SCU free of 9.2 SCU" in verdict, verdict
    api.delete_namespaced_pod("resident", "cache-binding", grace_period_seconds=0)
    eventually(
        lambda: filter_verdict(server, "cache-n2", "4"), lambda v: v == "pass", 20, "room back"
    )


def test_a_watch_resumed_after_compaction_relists_and_sees_what_it_missed(plane, api, server):
    """The server is frozen, the API server restarts (its watch cache rebuilt from etcd),
    a node is added and etcd compacted: the server's resume is older than anything left,
    the API server answers 410 Gone, and the server relists.

    The freeze can outlast gunicorn's 30 s worker timeout on a busy machine (an API server
    restart alone takes 10-30 s here). The master kills a worker whose heartbeat is older
    than that, and a fresh worker lists from scratch: no 410, no resume tested. So the
    workers are thawed first and beat (every second) before the master looks again.
    """
    log = server.proc.log
    before = log.read_text(errors="replace")
    master, *workers = process_tree(server.proc.popen.pid)
    for pid in (master, *workers):
        os.kill(pid, signal.SIGSTOP)
    try:
        plane.restart("kube-apiserver")
        objects.create_nodes(
            plane, [objects.node("cache-late", {objects.INSTANCE_TYPE: "m6a.2xlarge"})]
        )
        plane.compact_etcd()
    finally:
        for pid in workers:
            os.kill(pid, signal.SIGCONT)
        if workers:
            time.sleep(3)
        os.kill(master, signal.SIGCONT)
    eventually(lambda: filter_verdict(server, "cache-late"), lambda v: v == "pass", 60, "relisted")
    text = log.read_text(errors="replace")[len(before) :]
    assert "WORKER TIMEOUT" not in text, text[-3000:]  # the workers that resumed relisted
    assert set(process_tree(server.proc.popen.pid)[1:]) == set(workers)
    assert text.count("relisting") >= 1, text[-3000:]
    assert "410" in text
