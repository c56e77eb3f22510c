"""The MachineCatalog resource on the real API server: the generated CRD installs, a good
catalog applies, the API server itself refuses bad ones at ``kubectl apply`` with a
message naming the problem, ``kubectl explain`` reads the model's descriptions, and the
status the core computes is accepted by the status subresource and shown by ``kubectl get``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from harness import objects
from harness.controlplane import ControlPlane
from kubernetes import client

from machine_catalog.resource import catalog_from_resource, catalog_status

CATALOGS = ("machine-catalog.io", "v1alpha1", "machinecatalogs")

GOOD = """\
apiVersion: machine-catalog.io/v1alpha1
kind: MachineCatalog
metadata: {name: e2e-crd}
spec:
  baseline: m5
  families:
    - {name: m5, scuPerCore: 1.0, instanceTypes: [m5.large, m5.xlarge]}
    - {name: m6i, scuPerCore: 1.18, instanceTypes: [m6i.large, m6i.xlarge]}
    - name: spr
      scuPerCore: 1.35
      nodeSelector:
        matchLabels: {e2e.machine-catalog.io/cpu: spr}
"""


@pytest.fixture
def cleanup(plane: ControlPlane, crd: str) -> Iterator[None]:
    yield
    plane.kubectl("delete", "machinecatalog", "e2e-crd", "--ignore-not-found")


def apply(plane: ControlPlane, text: str):
    return plane.kubectl("apply", "-f", "-", input=text, check=False)


def test_a_valid_catalog_applies(plane: ControlPlane, cleanup: None) -> None:
    out = apply(plane, GOOD)
    assert out.returncode == 0, out.stderr
    assert "machinecatalog.machine-catalog.io/e2e-crd created" in out.stdout


@pytest.mark.parametrize(
    ("edit", "messages"),
    [
        (
            ("instanceTypes: [m6i.large, m6i.xlarge]", "instanceTypes: [m6i.large, m5.xlarge]"),
            (
                "spec.families: Invalid value: an instance type is listed by more than one "
                "family; an instance type belongs to one family: remove it from all but one",
            ),
        ),
        (
            ("baseline: m5", "baseline: m4"),
            (
                "spec.baseline: Invalid value: baseline m4 is not a family: name one of the "
                "families, or add a family called m4",
            ),
        ),
        (
            ("{name: m6i, scuPerCore: 1.18", "{name: m6i, scuPerCore: 0"),
            ("spec.families[1].scuPerCore: Invalid value: 0: must be above 0 and at most 16",),
        ),
        (
            ("{name: m5, scuPerCore: 1.0", "{name: m5, scuPerCore: 1.1"),
            ("baseline family m5 must have scuPerCore 1.0 (1 SCU is one vCPU of the baseline)",),
        ),
        (
            ("{name: m6i,", "{name: m5,"),
            ("family names must be unique: two families have the same name",),
        ),
        (
            ("{name: m6i, scuPerCore: 1.18", "{name: m6i, scuPerCor: 1.18"),
            ('strict decoding error: unknown field "spec.families[1].scuPerCor"',),
        ),
        (
            ("matchLabels: {e2e.machine-catalog.io/cpu: spr}", "matchLabels: {}"),
            ("spec.families[2].nodeSelector", "an empty nodeSelector would match every node"),
        ),
    ],
    ids=[
        "duplicated-instance-type",
        "no-baseline",
        "scu-per-core-zero",
        "baseline-not-one",
        "duplicated-family",
        "misspelt-field",
        "empty-selector",
    ],
)
def test_a_bad_catalog_is_refused_by_kubectl_apply(
    plane: ControlPlane, cleanup: None, edit: tuple[str, str], messages: tuple[str, ...]
) -> None:
    text = GOOD.replace(*edit)
    assert text != GOOD
    out = apply(plane, text)
    assert out.returncode != 0, out.stdout
    for message in messages:
        assert message in out.stderr, out.stderr
    got = plane.kubectl("get", "machinecatalog", "e2e-crd", "--ignore-not-found", "-o", "name")
    assert got.stdout == ""  # nothing was stored


def test_a_refused_update_keeps_the_stored_catalog(plane: ControlPlane, cleanup: None) -> None:
    assert apply(plane, GOOD).returncode == 0
    out = apply(plane, GOOD.replace("baseline: m5", "baseline: m4"))
    assert out.returncode != 0 and "baseline m4 is not a family" in out.stderr
    stored = json.loads(plane.kubectl("get", "machinecatalog", "e2e-crd", "-o", "json").stdout)
    assert stored["spec"]["baseline"] == "m5"


def test_kubectl_explain_prints_the_model_descriptions(plane: ControlPlane, crd: str) -> None:
    families = " ".join(plane.kubectl("explain", "machinecatalog.spec.families").stdout.split())
    assert "Machine families. A node belongs to the family that lists its instance type" in families
    for field in ("scuPerCore", "instanceTypes", "nodeSelector", "schedulable"):
        assert field in families
    factor = plane.kubectl("explain", "machinecatalog.spec.families.scuPerCore").stdout
    assert "Work of one vCPU of this family, in vCPUs of the baseline family (SCU)" in " ".join(
        factor.split()
    )


def test_the_status_the_core_computes_is_accepted_and_shown(
    plane: ControlPlane, cleanup: None
) -> None:
    """The status body of machine_catalog.resource, for this cluster's nodes, through the
    status subresource; ``kubectl get`` prints it in the printer columns."""
    objects.create_nodes(
        plane,
        [
            objects.node("crd-m5", {objects.INSTANCE_TYPE: "m5.xlarge"}),
            objects.node("crd-m6i", {objects.INSTANCE_TYPE: "m6i.xlarge"}),
        ],
    )
    # The nodes are the session's: they go again, or other tests' families would gain them.
    try:
        assert apply(plane, GOOD).returncode == 0
        custom = client.CustomObjectsApi(plane.api_client())
        obj = custom.get_cluster_custom_object(*CATALOGS, "e2e-crd")
        nodes = client.ApiClient().sanitize_for_serialization(
            client.CoreV1Api(plane.api_client()).list_node().items
        )
        served = catalog_from_resource(obj)
        obj["status"] = catalog_status(obj, served, nodes, "2026-05-01T10:00:00Z")
        custom.replace_cluster_custom_object_status(*CATALOGS, "e2e-crd", obj)

        stored = custom.get_cluster_custom_object(*CATALOGS, "e2e-crd")
        assert stored["status"] == obj["status"]  # nothing pruned: the schema describes it all
        matched = {f["name"]: f["nodes"] for f in stored["status"]["families"]}
        assert matched["m5"] >= 1 and matched["m6i"] >= 1
        assert stored["status"]["catalogHash"] == served.hash
        table = plane.kubectl("get", "machinecatalogs", "-o", "wide").stdout.splitlines()
        header = table[0].split()
        assert header == [
            "NAME",
            "BASELINE",
            "FAMILIES",
            "MATCHED",
            "UNKNOWN",
            "AMBIGUOUS",
            "HASH",
            "READY",
            "AGE",
        ]
        (row,) = [line.split() for line in table[1:] if line.startswith("e2e-crd ")]
        status = stored["status"]
        assert row[:8] == [
            "e2e-crd",
            "m5",
            "3",
            str(status["matchedNodes"]),
            str(status["unknownNodeCount"]),
            str(status["ambiguousNodeCount"]),
            served.hash,
            "True",
        ]
        # The other nodes of the session cluster match none of these three families.
        assert status["unknownNodeCount"] + status["ambiguousNodeCount"] > 0
    finally:
        for name in ("crd-m5", "crd-m6i"):
            client.CoreV1Api(plane.api_client()).delete_node(name)
