"""One process owns a replica's state: admissions in a row always see each other.

Each gunicorn worker used to be a full copy of the controller with its own reservation
ledger, so a second admission a few milliseconds after the first could land on another
copy and ignore the first's reservation (1 run in 3 chose a full family). ``serve`` with
its defaults now runs one process. The cluster here has 40 single-node families of 4 cores
each and every pod asks for 3 SCU, so a family holds exactly one such pod: each pair of
admissions is allowed the same two families, and the second pod of a pair must go to the
family the first did not take. Twenty pairs, each on families no other pair uses.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import orjson
import pytest
from support.helpers import Served, admission_pod, ready, serve
from support.nodes import node
from support.reviews import create_review, patched

from machine_catalog.annotations import FAMILIES_ANNOTATION, FAMILY_ANNOTATION
from machine_catalog.matching import INSTANCE_TYPE_LABEL

PAIRS = 20
FAMILIES = [f"f{i:02d}" for i in range(2 * PAIRS)]
CATALOG = "\n".join(
    [
        "apiVersion: machine-catalog.io/v1alpha1",
        "kind: MachineCatalog",
        "metadata: {name: one-owner}",
        "spec:",
        "  baseline: f00",
        "  families:",
        *(f"    - {{name: {f}, scuPerCore: 1.0, instanceTypes: [{f}.xlarge]}}" for f in FAMILIES),
    ]
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("one-owner")
    (tmp / "catalog.yaml").write_text(CATALOG)
    nodes = [node(f"node-{f}", {INSTANCE_TYPE_LABEL: f"{f}.xlarge"}, cpu="4") for f in FAMILIES]
    (tmp / "snapshot.json").write_bytes(orjson.dumps({"kind": "List", "items": nodes}))
    served = serve(  # no --threads or other flags: the defaults are what is tested
        tmp, "--catalog", str(tmp / "catalog.yaml"), "--snapshot", str(tmp / "snapshot.json")
    )
    try:
        ready(served)
        yield served
    finally:
        assert served.stop() == 0
        assert "Traceback" not in served.log_text()


def pod_for(families: str) -> dict:
    pod = copy.deepcopy(admission_pod())
    pod["metadata"]["annotations"] = {FAMILIES_ANNOTATION: families}
    pod["spec"].pop("initContainers", None)
    pod["spec"]["containers"] = [
        {"name": "app", "image": "x", "resources": {"requests": {"cpu": "3"}}}
    ]
    return pod


def admitted_family(server: Served, families: str) -> str:
    review = create_review(pod_for(families))
    reply = server.post("/webhook/mutate", orjson.dumps(review))
    assert reply.status == 200, reply.body
    response = reply.json()["response"]
    assert response["allowed"], response
    return patched(review, response)["metadata"]["annotations"][FAMILY_ANNOTATION]


@pytest.mark.slow
def test_two_admissions_in_a_row_see_each_other_20_times(server: Served) -> None:
    for i in range(PAIRS):
        pair = FAMILIES[2 * i : 2 * i + 2]
        first = admitted_family(server, ",".join(pair))
        second = admitted_family(server, ",".join(pair))
        assert {first, second} == set(pair), f"pair {i}: both pods went to {first}"
