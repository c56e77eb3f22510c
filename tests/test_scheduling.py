"""``/scheduler/filter`` and ``/scheduler/prioritize`` through the Flask test client.

Requests are shaped exactly as kube-scheduler sends them (wire-protocol.md §1.1/§1.2), in
both extender modes, against the real-world fixture nodes of six platforms and a small
catalog written here, so the expectations below are computed by hand from that catalog.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from extender.server.app import create_app
from extender.state.cluster import ClusterState
from extender.state.runtime import Runtime, Settings
from machine_catalog.loading import CatalogSource

FIXTURES = Path(__file__).parent / "fixtures"

EKS = "ip-10-0-1-23.ec2.internal"  # m6i.2xlarge, 7910m
KARPENTER = "ip-10-0-7-201.ec2.internal"  # m7g.4xlarge: no family in the test catalog
GKE = "gke-prod-pool-n2-8f7c2a1b-x7k2"  # n2-standard-8, 7910m
AKS = "aks-d8sv5-31415926-vmss000004"  # Standard_D8s_v5: claimed by two families
TKE = "10.0.16.42"  # S5.2XLARGE16: a retired family
METAL = "rack12-node07"  # NFD Intel family 6 model 143, no instance type, 111 cores
ALL = [EKS, KARPENTER, GKE, AKS, TKE, METAL]

CATALOG = """
apiVersion: machine-catalog.io/v1alpha1
kind: MachineCatalog
metadata: {name: test}
spec:
  baseline: base
  unknownNodes: %(unknown)s
  scoring: {strategy: %(strategy)s}
  families:
    - {name: base, scuPerCore: 1.0, instanceTypes: [n2-standard-8]}
    - {name: m6i, scuPerCore: 1.18, instanceTypes: [m6i.2xlarge]}
    - {name: s5, scuPerCore: 0.9, schedulable: false, instanceTypes: [S5.2XLARGE16]}
    - {name: dv5, scuPerCore: 1.1, instanceTypes: [Standard_D8s_v5]}
    - name: azure-pool
      scuPerCore: 1.05
      nodeSelector: {matchLabels: {kubernetes.azure.com/agentpool: d8sv5}}
    - name: spr
      scuPerCore: 1.35
      nodeSelector:
        matchLabels: {feature.node.kubernetes.io/cpu-model.vendor_id: Intel}
        matchExpressions:
          - {key: feature.node.kubernetes.io/cpu-model.id, operator: In, values: ["143"]}
"""


def fixture_nodes() -> list[dict[str, Any]]:
    return json.loads((FIXTURES / "nodes-real-world.json").read_text())["items"]


def bound_pod(name: str, node: str, cpu: str, phase: str = "Running", **spec: Any) -> dict:
    return {
        "metadata": {"name": name, "namespace": "team-a", "uid": f"uid-{name}"},
        "spec": {
            "nodeName": node,
            "containers": [{"name": "app", "resources": {"requests": {"cpu": cpu}}}],
            **spec,
        },
        "status": {"phase": phase},
    }


def cluster_pods() -> list[dict[str, Any]]:
    sidecar = {
        "name": "proxy",
        "restartPolicy": "Always",
        "resources": {"requests": {"cpu": "500m"}},
    }
    return [
        bound_pod("busy", EKS, "6"),  # EKS: 6000m of 7910m requested
        bound_pod("web", GKE, "500m", initContainers=[sidecar]),  # GKE: 500m + 500m sidecar
        bound_pod("done", GKE, "4", phase="Succeeded"),  # terminal: holds nothing
    ]


def make_runtime(
    tmp_path: Path,
    *,
    unknown: str = "reject",
    strategy: str = "balanced",
    feed: bool = True,
    **settings: Any,
) -> Runtime:
    path = tmp_path / "catalog.yaml"
    path.write_text(CATALOG % {"unknown": unknown, "strategy": strategy})
    catalogs = CatalogSource(path)
    cluster = ClusterState(catalogs.current)
    catalogs.on_reload(cluster.set_catalog)
    if feed:
        cluster.replace(fixture_nodes(), cluster_pods(), resource_version="42")
        cluster.source = "snapshot test"
    return Runtime(catalogs=catalogs, cluster=cluster, settings=Settings(**settings))


def pod(cpu: str = "2", family: str | None = None) -> dict[str, Any]:
    """A pending pod as kube-scheduler's informer holds it (wire-protocol.md §1.1)."""
    meta: dict[str, Any] = {
        "name": "web-7d9c5b8f4-x2k8q",
        "generateName": "web-7d9c5b8f4-",
        "namespace": "team-a",
        "uid": "0b7c3f8e-2d6a-4c43-9f5e-1b2a3c4d5e6f",
        "resourceVersion": "123456",
        "creationTimestamp": "2026-07-30T10:00:00Z",
        "labels": {"app": "web", "pod-template-hash": "7d9c5b8f4"},
    }
    if family is not None:
        meta["annotations"] = {"machine-catalog.io/family": family}
    return {
        "metadata": meta,
        "spec": {
            "schedulerName": "machine-catalog",
            "containers": [
                {
                    "name": "app",
                    "image": "nginx:1.27",
                    "resources": {"requests": {"cpu": cpu, "memory": "256Mi"}},
                }
            ],
            "restartPolicy": "Always",
            "priority": 0,
        },
        "status": {"phase": "Pending", "qosClass": "Burstable"},
    }


def names_args(the_pod: dict, names: list[str]) -> bytes:
    return orjson.dumps({"Pod": the_pod, "Nodes": None, "NodeNames": names})


def nodes_args(the_pod: dict, nodes: list[dict]) -> bytes:
    return orjson.dumps(
        {"Pod": the_pod, "Nodes": {"metadata": {}, "items": nodes}, "NodeNames": None}
    )


@pytest.fixture
def runtime(tmp_path: Path) -> Runtime:
    return make_runtime(tmp_path)


@pytest.fixture
def client(runtime: Runtime) -> Any:
    return create_app(runtime).test_client()


def post(client: Any, path: str, body: bytes) -> Any:
    return client.post(path, data=body, content_type="application/json")


# -- filter, nodeCacheCapable: true ---------------------------------------------------------


def test_filter_pinned_pod_sends_every_rejection_to_the_right_map(client: Any) -> None:
    body = names_args(pod("2", family="m6i"), [*ALL, "ghost-node"])
    resp = post(client, "/scheduler/filter", body)
    assert resp.status_code == 200
    assert resp.content_type == "application/json"
    result = resp.get_json()
    assert list(result) == [
        "Nodes",
        "NodeNames",
        "FailedNodes",
        "FailedAndUnresolvableNodes",
        "Error",
    ]
    assert result["Nodes"] is None
    assert result["NodeNames"] == []  # explicit: every node rejected, on purpose
    assert result["Error"] == ""
    # EKS is the pod's family but 6000m of 7910m are taken: unresolvable like the rest
    # (a FailedNodes node with no victim fails kube-scheduler's preemption, #139270).
    # 2000m x 1.18 = 2360 SCU-millis; free 1910m x 1.18 = 2253.8 -> 2.253; 7910 x 1.18 = 9333.8
    assert result["FailedNodes"] == {}
    unresolvable = result["FailedAndUnresolvableNodes"]
    assert unresolvable[EKS] == (
        "needs 2.36 SCU (2000m on family m6i at 1.18 SCU/core), 2.253 SCU free of 9.333 SCU"
    )
    assert set(unresolvable) == {EKS, KARPENTER, GKE, AKS, TKE, METAL, "ghost-node"}
    assert unresolvable[KARPENTER] == (
        "instance type m7g.4xlarge matches no family of catalog "
        f"{client.application.extensions['machine_catalog_runtime'].catalogs.current.version}"
    )
    assert "matches several families" in unresolvable[AKS]
    assert "(dv5, azure-pool)" in unresolvable[AKS]
    assert "instance type Standard_D8s_v5" in unresolvable[AKS]
    assert unresolvable[TKE] == "family s5 is retired (schedulable: false)"
    assert unresolvable[GKE] == (
        "node is family base (instance type n2-standard-8), pod is pinned to family m6i"
    )
    assert unresolvable[METAL] == (
        "node is family spr (no instance-type label), pod is pinned to family m6i"
    )
    assert unresolvable["ghost-node"].startswith(
        "node is not in the extender's cluster cache (cache age "
    )


def test_filter_unpinned_pod_is_checked_against_policies_and_capacity(client: Any) -> None:
    resp = post(client, "/scheduler/filter", names_args(pod("2"), ALL))
    result = resp.get_json()
    # Request order is kept in the passing list.
    assert result["NodeNames"] == [GKE, METAL]
    assert result["FailedNodes"] == {}
    assert set(result["FailedAndUnresolvableNodes"]) == {EKS, KARPENTER, AKS, TKE}


def test_filter_all_pass_echoes_the_names(client: Any) -> None:
    resp = post(client, "/scheduler/filter", names_args(pod("100m"), [METAL, GKE]))
    assert resp.get_json() == {
        "Nodes": None,
        "NodeNames": [METAL, GKE],
        "FailedNodes": {},
        "FailedAndUnresolvableNodes": {},
        "Error": "",
    }


def test_filter_capacity_boundary_is_exact(client: Any) -> None:
    # EKS has exactly 1910m free: a 1910m pod fits, 1911m does not.
    fits = post(client, "/scheduler/filter", names_args(pod("1910m"), [EKS])).get_json()
    assert fits["NodeNames"] == [EKS]
    over = post(client, "/scheduler/filter", names_args(pod("1911m"), [EKS])).get_json()
    assert over["NodeNames"] == []
    assert set(over["FailedAndUnresolvableNodes"]) == {EKS}


def test_filter_counts_sidecars_in_the_node_totals(client: Any) -> None:
    # GKE holds 500m + a 500m sidecar = 1000m of 7910m: 6910m free.
    ok = post(client, "/scheduler/filter", names_args(pod("6910m"), [GKE])).get_json()
    assert ok["NodeNames"] == [GKE]
    no = post(client, "/scheduler/filter", names_args(pod("6911m"), [GKE])).get_json()
    assert no["FailedAndUnresolvableNodes"][GKE] == (
        "needs 6.911 SCU (6911m on family base at 1 SCU/core), 6.91 SCU free of 7.91 SCU"
    )


def test_filter_pod_without_cpu_request_fits_even_a_full_node(tmp_path: Path) -> None:
    runtime = make_runtime(tmp_path)
    runtime.cluster.apply("Pod", "ADDED", bound_pod("hog", GKE, "7"))  # 8000m > 7910m
    client = create_app(runtime).test_client()
    no_cpu = pod()
    del no_cpu["spec"]["containers"][0]["resources"]["requests"]["cpu"]
    result = post(client, "/scheduler/filter", names_args(no_cpu, [GKE])).get_json()
    assert result["NodeNames"] == [GKE]
    result = post(client, "/scheduler/filter", names_args(pod("1m"), [GKE])).get_json()
    assert result["NodeNames"] == []
    assert "0 SCU free of 7.91 SCU" in result["FailedAndUnresolvableNodes"][GKE]


def test_filter_pod_pinned_to_a_family_the_catalog_lacks(client: Any, runtime: Runtime) -> None:
    result = post(client, "/scheduler/filter", names_args(pod("1", "gone"), ALL)).get_json()
    assert result["NodeNames"] == []
    assert result["FailedNodes"] == {}
    version = runtime.catalogs.current.version
    expected = f"pod is pinned to family gone which the catalog ({version}) does not have"
    assert result["FailedAndUnresolvableNodes"] == dict.fromkeys(ALL, expected)


def test_unknown_nodes_allowed_pass_unless_the_pod_is_pinned(tmp_path: Path) -> None:
    client = create_app(make_runtime(tmp_path, unknown="allow")).test_client()
    unpinned = post(client, "/scheduler/filter", names_args(pod("2"), [KARPENTER])).get_json()
    assert unpinned["NodeNames"] == [KARPENTER]
    # Treated as baseline (1 SCU/core) for capacity: 15890m allocatable.
    big = post(client, "/scheduler/filter", names_args(pod("16"), [KARPENTER])).get_json()
    assert big["FailedAndUnresolvableNodes"][KARPENTER] == (
        "needs 16 SCU (16000m on a node of no family, counted as baseline base at 1 SCU/core),"
        " 15.89 SCU free of 15.89 SCU"
    )
    pinned = post(client, "/scheduler/filter", names_args(pod("2", "m6i"), [KARPENTER]))
    reason = pinned.get_json()["FailedAndUnresolvableNodes"][KARPENTER]
    assert reason.startswith("instance type m7g.4xlarge matches no family of catalog test@")
    assert "this pod is pinned to m6i" in reason


def test_filter_uses_the_catalog_after_a_reload(tmp_path: Path, runtime: Runtime) -> None:
    client = create_app(runtime).test_client()
    path = runtime.catalogs.path
    path.write_text(path.read_text().replace("schedulable: false, ", ""))
    assert runtime.catalogs.reload()
    result = post(client, "/scheduler/filter", names_args(pod("1"), [TKE])).get_json()
    assert result["NodeNames"] == [TKE]


# -- filter, nodeCacheCapable: false --------------------------------------------------------


def test_filter_full_nodes_returns_the_node_objects_unchanged(client: Any) -> None:
    nodes = fixture_nodes()
    sent = copy.deepcopy(nodes)
    resp = post(client, "/scheduler/filter", nodes_args(pod("2", family="spr"), nodes))
    result = resp.get_json()
    assert result["NodeNames"] is None
    assert result["Nodes"]["metadata"] == {}
    assert result["Nodes"]["items"] == [n for n in sent if n["metadata"]["name"] == METAL]
    assert set(result["FailedAndUnresolvableNodes"]) == {EKS, KARPENTER, GKE, AKS, TKE}
    assert result["FailedNodes"] == {}
    assert result["Error"] == ""


def test_filter_full_nodes_judges_a_node_the_cache_lacks_from_its_object(client: Any) -> None:
    newcomer = copy.deepcopy(next(n for n in fixture_nodes() if n["metadata"]["name"] == EKS))
    newcomer["metadata"]["name"] = "ip-10-0-9-9.ec2.internal"
    newcomer["status"]["allocatable"]["cpu"] = "1500m"
    small = post(client, "/scheduler/filter", nodes_args(pod("1", "m6i"), [newcomer]))
    assert small.get_json()["Nodes"]["items"] == [newcomer]
    big = post(client, "/scheduler/filter", nodes_args(pod("2", "m6i"), [newcomer])).get_json()
    assert big["Nodes"]["items"] == []
    reason = big["FailedAndUnresolvableNodes"]["ip-10-0-9-9.ec2.internal"]
    assert reason.startswith("needs 2.36 SCU (2000m on family m6i at 1.18 SCU/core)")
    assert "not in the extender's cache yet, its pods' CPU counted as 0" in reason


def test_filter_full_nodes_all_pass_and_empty_list(client: Any) -> None:
    nodes = [n for n in fixture_nodes() if n["metadata"]["name"] in (GKE, METAL)]
    result = post(client, "/scheduler/filter", nodes_args(pod("1"), nodes)).get_json()
    assert result["Nodes"] == {"metadata": {}, "items": nodes}
    empty = post(client, "/scheduler/filter", nodes_args(pod("1"), [])).get_json()
    assert empty["Nodes"] == {"metadata": {}, "items": []}
    assert empty["FailedNodes"] == {} and empty["FailedAndUnresolvableNodes"] == {}


def test_go_style_case_insensitive_keys_are_accepted(client: Any) -> None:
    body = orjson.dumps({"pod": pod("1"), "nodenames": [GKE], "nodes": None})
    assert post(client, "/scheduler/filter", body).get_json()["NodeNames"] == [GKE]


# -- not synced, malformed ------------------------------------------------------------------


def test_unsynced_cache_answers_filter_with_error_and_prioritize_with_503(
    tmp_path: Path,
) -> None:
    client = create_app(make_runtime(tmp_path, feed=False)).test_client()
    resp = post(client, "/scheduler/filter", names_args(pod("1"), [GKE]))
    assert resp.status_code == 200
    assert resp.get_json() == {
        "Nodes": None,
        "NodeNames": None,
        "FailedNodes": None,
        "FailedAndUnresolvableNodes": None,
        "Error": "cluster cache not synced",
    }
    resp = post(client, "/scheduler/prioritize", names_args(pod("1"), [GKE]))
    assert resp.status_code == 503
    assert resp.get_json() == {"error": "cluster cache not synced"}


MALFORMED = [
    pytest.param(b"", id="empty"),
    pytest.param(b"{not json", id="not-json"),
    pytest.param(b"[]", id="array"),
    pytest.param(b'"Pod"', id="string"),
    pytest.param(orjson.dumps({"NodeNames": ["a"]}), id="pod-missing"),
    pytest.param(orjson.dumps({"Pod": None, "NodeNames": ["a"]}), id="pod-null"),
    pytest.param(orjson.dumps({"Pod": [], "NodeNames": ["a"]}), id="pod-array"),
    pytest.param(orjson.dumps({"Pod": {"spec": []}, "NodeNames": ["a"]}), id="spec-array"),
    pytest.param(orjson.dumps({"Pod": {}, "NodeNames": None, "Nodes": None}), id="no-nodes"),
    pytest.param(orjson.dumps({"Pod": {}, "NodeNames": "a"}), id="names-string"),
    pytest.param(orjson.dumps({"Pod": {}, "NodeNames": ["a", 1]}), id="names-int"),
    pytest.param(orjson.dumps({"Pod": {}, "Nodes": []}), id="nodes-array"),
    pytest.param(orjson.dumps({"Pod": {}, "Nodes": {"items": {}}}), id="items-object"),
    pytest.param(orjson.dumps({"Pod": {}, "Nodes": {"items": [{}]}}), id="node-no-name"),
    pytest.param(orjson.dumps({"Pod": {}, "Nodes": {"items": [5]}}), id="node-int"),
    pytest.param(orjson.dumps({"Pod": {}, "NodeNames": ["a"], "Nodes": {"items": []}}), id="both"),
    pytest.param(
        names_args({"spec": {"containers": [{"resources": {"requests": {"cpu": "lots"}}}]}}, ["a"]),
        id="bad-cpu",
    ),
    pytest.param(
        names_args({"metadata": {"annotations": {"machine-catalog.io/family": 3}}}, ["a"]),
        id="family-not-string",
    ),
]


@pytest.mark.parametrize("route", ["/scheduler/filter", "/scheduler/prioritize"])
@pytest.mark.parametrize("body", MALFORMED)
def test_malformed_bodies_get_400_json(client: Any, route: str, body: bytes) -> None:
    resp = post(client, route, body)
    assert resp.status_code == 400
    error = resp.get_json()["error"]
    assert isinstance(error, str) and error
    assert "Traceback" not in error


def test_oversized_body_gets_413_before_it_is_read(tmp_path: Path) -> None:
    client = create_app(make_runtime(tmp_path, max_body=1000)).test_client()
    big = names_args(pod("1"), [f"node-{i}" for i in range(200)])
    assert len(big) > 1000
    resp = post(client, "/scheduler/filter", big)
    assert resp.status_code == 413
    assert "1000 bytes" in resp.get_json()["error"]
    small = post(client, "/scheduler/filter", names_args(pod("1"), [GKE]))
    assert small.status_code == 200


def test_oversized_chunked_body_is_cut_off(tmp_path: Path) -> None:
    import io

    client = create_app(make_runtime(tmp_path, max_body=1000)).test_client()
    big = names_args(pod("1"), [f"node-{i}" for i in range(200)])
    resp = client.post(
        "/scheduler/filter",
        input_stream=io.BytesIO(big),
        content_type="application/json",
        environ_overrides={"wsgi.input_terminated": True},
        headers={"Transfer-Encoding": "chunked"},
    )
    assert resp.status_code == 413


def test_filter_internal_error_is_an_error_field_not_a_traceback(
    client: Any, runtime: Runtime, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    def broken(names: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(runtime.cluster, "view", broken)
    resp = post(client, "/scheduler/filter", names_args(pod("1"), [GKE]))
    assert resp.status_code == 200
    result = resp.get_json()
    assert result["NodeNames"] is None
    assert "internal error" in result["Error"] and "boom" not in result["Error"]
    assert "RuntimeError: boom" in caplog.text  # the traceback is in the server's log
    resp = post(client, "/scheduler/prioritize", names_args(pod("1"), [GKE]))
    assert resp.status_code == 500
    assert "boom" not in resp.get_data(as_text=True)


# -- prioritize -----------------------------------------------------------------------------


def test_prioritize_balanced_scores_by_hand(client: Any) -> None:
    # balanced = floor(10 * (allocatable - requested - pod) / allocatable), clipped to 0..10:
    #   GKE   7910m, 1000m used, pod 2000m: floor(10 * 4910 / 7910)  = floor(6.21) = 6
    #   METAL 111000m, 0 used:              floor(10 * 109000/111000) = floor(9.82) = 9
    #   EKS   7910m, 6000m used:            10 * -90 / 7910 < 0 -> 0
    #   a name the cache does not know:     0
    names = [GKE, "ghost-node", METAL, EKS]
    resp = post(client, "/scheduler/prioritize", names_args(pod("2"), names))
    assert resp.status_code == 200
    assert resp.content_type == "application/json"
    assert orjson.loads(resp.data) == [
        {"Host": GKE, "Score": 6},
        {"Host": "ghost-node", "Score": 0},
        {"Host": METAL, "Score": 9},
        {"Host": EKS, "Score": 0},
    ]


def test_prioritize_binpack_scores_by_hand(tmp_path: Path) -> None:
    client = create_app(make_runtime(tmp_path, strategy="binpack")).test_client()
    names = [GKE, METAL, EKS, "ghost-node"]
    resp = post(client, "/scheduler/prioritize", names_args(pod("2"), names))
    # binpack = 10 - balanced; unknown names still 0.
    assert orjson.loads(resp.data) == [
        {"Host": GKE, "Score": 4},
        {"Host": METAL, "Score": 1},
        {"Host": EKS, "Score": 10},
        {"Host": "ghost-node", "Score": 0},
    ]


def test_prioritize_full_nodes_mode_and_empty(client: Any) -> None:
    nodes = [n for n in fixture_nodes() if n["metadata"]["name"] in (METAL, GKE)]
    resp = post(client, "/scheduler/prioritize", nodes_args(pod("2"), nodes))
    # Fixture order: GKE comes before METAL.
    assert orjson.loads(resp.data) == [{"Host": GKE, "Score": 6}, {"Host": METAL, "Score": 9}]
    assert post(client, "/scheduler/prioritize", names_args(pod("2"), [])).data == b"[]"


def test_host_priorities_encoding_escapes_odd_names() -> None:
    from extender.scheduler.wire import encode_host_priorities

    names = ['we"ird', "back\\slash", "plain"]
    assert orjson.loads(encode_host_priorities(names, [1, 2, 3])) == [
        {"Host": n, "Score": s} for n, s in zip(names, [1, 2, 3], strict=True)
    ]
    assert orjson.loads(encode_host_priorities(["a", "b"], [10, 0])) == [
        {"Host": "a", "Score": 10},
        {"Host": "b", "Score": 0},
    ]


def test_reason_map_encodes_what_it_maps() -> None:
    import numpy as np

    from extender.scheduler.wire import ReasonMap

    texts = ["needs 2 SCU, 1 free of 4", 'odd "quoted" \\ text\n']
    names = ["n1", "n2", "n3"]
    reasons = ReasonMap(names, np.array([1, 0, 1]), texts)
    expected = {"n1": texts[1], "n2": texts[0], "n3": texts[1]}
    assert orjson.loads(reasons.to_json()) == expected
    assert list(orjson.loads(reasons.to_json())) == names  # request order
    assert reasons == expected and reasons["n2"] == texts[0] and len(reasons) == 3
    odd = ['we"ird', "back\\slash"]  # names that need escaping take the plain road
    assert orjson.loads(ReasonMap(odd, np.array([0, 0]), ["x"]).to_json()) == dict.fromkeys(
        odd, "x"
    )
    assert ReasonMap([], np.array([], dtype=np.int64), texts).to_json() == b"{}"
