"""The admission webhook through the Flask test client, and AdmissionReviews to send it.

:class:`Webhook` builds the real app over a synced cache of :data:`support.nodes.NODES`
(or the nodes given) and checks every reply's envelope as the API server would before a
test looks at the response; :func:`make_review` is the real ReplicaSet pod review of the
fixtures with a fresh uid.
"""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path
from typing import Any

from extender.admission import webhook as admission
from extender.server.app import create_app
from extender.state.cluster import ClusterState
from extender.state.runtime import Runtime, Settings
from machine_catalog.catalog import Catalog
from machine_catalog.loading import CatalogSource, load_catalog
from support.nodes import NODES

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
CATALOG = load_catalog()
FIXTURE_REVIEW = json.loads((FIXTURES / "admission-review-replicaset-pod.json").read_text())
SCHEDULER = "machine-catalog"


class Webhook:
    """A test client of the app plus the pieces a test looks at."""

    def __init__(
        self,
        *,
        scheduler_name: str | None = SCHEDULER,
        nodes: list[dict] | None = None,
        synced: bool = True,
        catalog: Catalog = CATALOG,
    ) -> None:
        self.cluster = ClusterState(catalog)
        if synced:
            self.cluster.replace(NODES if nodes is None else nodes, [])
        self.runtime = Runtime(
            catalogs=CatalogSource(initial=catalog),
            cluster=self.cluster,
            settings=Settings(scheduler_name=scheduler_name),
        )
        self.app = create_app(self.runtime)
        self.client = self.app.test_client()
        self.admitter: admission.Admitter = self.app.extensions["machine_catalog.admitter"]

    def post(self, body: Any) -> Any:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.client.post("/webhook/mutate", data=data, content_type="application/json")

    def review(self, review: dict) -> dict:
        """POST a review; check the envelope; return ``response``."""
        reply = self.post(review)
        assert reply.status_code == 200, reply.data
        assert reply.content_type == "application/json"
        body = reply.get_json()
        assert body["apiVersion"] == "admission.k8s.io/v1"
        assert body["kind"] == "AdmissionReview"
        response = body["response"]
        assert response["uid"] == review["request"]["uid"]
        assert ("patch" in response) == ("patchType" in response)  # together or not at all
        if "patchType" in response:
            assert response["patchType"] == "JSONPatch"
            assert response["allowed"] is True
        if not response["allowed"]:
            assert set(response["status"]) == {"code", "message"}
            assert "Traceback" not in response["status"]["message"]
        for warning in response.get("warnings", []):
            assert 0 < len(warning) <= 120
        return response


def make_review(pod: dict | None = None, **request: Any) -> dict:
    review = copy.deepcopy(FIXTURE_REVIEW)
    review["request"]["uid"] = str(uuid.uuid4())
    if pod is not None:
        review["request"]["object"] = pod
    review["request"].update(request)
    return review
