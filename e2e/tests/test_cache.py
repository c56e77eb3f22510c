"""The watch-fed cache against the real API server: node add and delete, pods bound and
gone, and a forced relist after the API server restarts on a compacted etcd.

What the cache holds is read the way kube-scheduler reads it: through ``/scheduler/filter``.
Each check asks several times, so that both gunicorn workers (each has its own cache) answer.
Its nodes are aws-m6g (1 SCU per vCPU), a family no other test uses: they stay in the
session's cluster, and other tests count on their families' nodes being their own.
"""

from __future__ import annotations

import os
import signal

from harness import objects
from harness.kube import eventually, pod_manifest

FAMILY = "machine-catalog.io/family"
NOT_IN_CACHE = "not in the extender's cluster cache"


def filter_verdict(server, node: str, cpu: str = "100m") -> str:
    """'pass', or the reason the extender gives for ``node``, asked of every worker."""
    pod = pod_manifest("probe", cpu, annotations={FAMILY: "aws-m6g"})
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
        server.plane, [objects.node("cache-n1", {objects.INSTANCE_TYPE: "m6g.2xlarge"})]
    )
    eventually(lambda: filter_verdict(server, "cache-n1"), lambda v: v == "pass", 20, "node added")
    api.delete_node("cache-n1")
    eventually(
        lambda: filter_verdict(server, "cache-n1"), lambda v: NOT_IN_CACHE in v, 20, "node deleted"
    )


def test_bound_pods_take_room_and_give_it_back(api, server, kubelet):
    objects.create_nodes(
        server.plane, [objects.node("cache-n2", {objects.INSTANCE_TYPE: "m6g.2xlarge"})]
    )
    eventually(lambda: filter_verdict(server, "cache-n2", "4"), lambda v: v == "pass", 20, "room")
    api.create_namespace({"metadata": {"name": "cache-binding"}})
    api.create_namespaced_pod("cache-binding", pod_manifest("resident", "6", nodeName="cache-n2"))
    verdict = eventually(
        lambda: filter_verdict(server, "cache-n2", "4"), lambda v: v != "pass", 20, "room taken"
    )
    assert "needs 4 SCU" in verdict and "2 SCU free of 8 SCU" in verdict, verdict
    api.delete_namespaced_pod("resident", "cache-binding", grace_period_seconds=0)
    eventually(
        lambda: filter_verdict(server, "cache-n2", "4"), lambda v: v == "pass", 20, "room back"
    )


def test_a_watch_resumed_after_compaction_relists_and_sees_what_it_missed(plane, api, server):
    """The server is frozen, the API server restarts (its watch cache rebuilt from etcd),
    a node is added and etcd compacted: the server's resume is older than anything left,
    the API server answers 410 Gone, and the server relists."""
    log = server.proc.log
    before = log.read_text(errors="replace").count("relisting")
    tree = [server.proc.popen.pid, *_children(server.proc.popen.pid)]
    for pid in tree:
        os.kill(pid, signal.SIGSTOP)
    try:
        plane.restart("kube-apiserver")
        objects.create_nodes(
            plane, [objects.node("cache-late", {objects.INSTANCE_TYPE: "m6g.2xlarge"})]
        )
        plane.compact_etcd()
    finally:
        for pid in tree:
            os.kill(pid, signal.SIGCONT)
    eventually(lambda: filter_verdict(server, "cache-late"), lambda v: v == "pass", 60, "relisted")
    text = log.read_text(errors="replace")
    assert text.count("relisting") > before, text[-3000:]
    assert "410" in text


def _children(pid: int) -> list[int]:
    out = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            out += [int(p) for p in f.read().split()]
    return out
