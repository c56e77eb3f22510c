"""Security basics (issue 7, item 6).

- YAML is only ever parsed with safe loaders: checked on the source (every ``yaml.*`` call
  in the product code) and by feeding a ``!!python`` tag to every input that takes YAML
  (catalog, snapshot, kubeconfig) and checking it is refused, not run.
- No secret reaches the log or an answer: a real server at debug level with the access
  log on, watching an API server with a token from its kubeconfig, gets requests carrying
  bearer tokens, cookies, basic-auth passwords and secret env values, valid and invalid,
  while its API server fails in a few ways; none of those strings may appear in its
  output or in any answer. A broken kubeconfig is reported without its token.
- The webhook never trusts its own annotations on a pod it did not mutate: a pod that
  carries a complete, well-formed set of them but names a family the catalog does not
  have, or a retired one, is denied; a bare user-written family annotation is checked too
  (tests/test_admission.py::test_a_user_written_family_annotation_is_a_restriction_not_a_pass).
- Request size bounds: tests/test_bad_input.py (413 with and without Content-Length, the
  default limit). TLS 1.2 as the floor: tests/test_webhook_tls.py::test_tls_below_1_2_is_refused
  (a TLS 1.1-only client is refused by ``serve --certfile/--keyfile``, with a control).
"""

from __future__ import annotations

import ast
import base64
import copy
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from support.fakeapi import FakeApiServer, make_node, make_pod
from support.helpers import (
    CATALOG_A,
    DEADLINE,
    admission_review,
    extender_args,
    ready,
    scheduler_pod,
    serve,
    wait_until,
)
from support.nodes import NODES
from support.tracked import tracked_files
from support.webhook import Webhook, make_review

from extender.admission.patching import (
    CATALOG_ANNOTATION,
    FAMILY_ANNOTATION,
    SCU_PER_CORE_ANNOTATION,
    STANDARD_RESOURCES_ANNOTATION,
)
from extender.feeds.snapshot import SnapshotError, load_snapshot
from machine_catalog_cli import main as cli

ROOT = Path(__file__).resolve().parent.parent
PRODUCT_CODE = ["machine_catalog", "extender", "machine_catalog_cli", "benchmarks"]

# -- YAML -----------------------------------------------------------------------------------

#: Loading functions of PyYAML that build arbitrary Python objects, or may (by Loader).
_UNSAFE_CALLS = {"full_load", "full_load_all", "unsafe_load", "unsafe_load_all"}
_LOADER_CALLS = {"load", "load_all"}
_UNSAFE_NAMES = {"Loader", "FullLoader", "UnsafeLoader", "CLoader", "CFullLoader", "CUnsafeLoader"}


def _resolve(node: ast.expr, module_globals: dict[str, Any]) -> Any:
    """The object an expression names, for ``yaml.X``, ``getattr(yaml, "X", default)`` and
    names bound to those at module level; None for anything else."""
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        return getattr(yaml, node.attr, None) if node.value.id == "yaml" else None
    if isinstance(node, ast.Name):
        return module_globals.get(node.id)
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "getattr"
        and len(node.args) in (2, 3)
        and isinstance(node.args[0], ast.Name)
        and node.args[0].id == "yaml"
        and isinstance(node.args[1], ast.Constant)
    ):
        default = _resolve(node.args[2], module_globals) if len(node.args) == 3 else None
        return getattr(yaml, node.args[1].value, default)
    return None


def _safe_loader(node: ast.expr, module_globals: dict[str, Any]) -> bool:
    """Whether a ``Loader=`` argument is a safe loader (resolved against the module)."""
    loader = _resolve(node, module_globals)
    return (
        isinstance(loader, type)
        and issubclass(loader, yaml.constructor.SafeConstructor)
        and not issubclass(loader, yaml.constructor.FullConstructor)
    )


def yaml_problems(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    module_globals: dict[str, Any] = {}
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("yaml"):
            names = {a.name for a in node.names}
            if names & (_UNSAFE_CALLS | _LOADER_CALLS | _UNSAFE_NAMES):
                problems.append(f"{path}:{node.lineno}: from yaml import {sorted(names)}")
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "yaml"
            and node.attr in _UNSAFE_CALLS | _UNSAFE_NAMES
        ):
            problems.append(f"{path}:{node.lineno}: yaml.{node.attr}")
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
        ):
            # Module-level aliases such as ``_Loader = getattr(yaml, "CSafeLoader", ...)``.
            module_globals[node.targets[0].id] = _resolve(node.value, module_globals)
    for node in ast.walk(tree):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "yaml"
            and node.func.attr in _LOADER_CALLS
        ):
            continue
        loader = next((k.value for k in node.keywords if k.arg == "Loader"), None)
        if loader is None and len(node.args) > 1:
            loader = node.args[1]
        if loader is None or not _safe_loader(loader, module_globals):
            problems.append(f"{path}:{node.lineno}: yaml.{node.func.attr} without a safe Loader")
    return problems


def test_product_code_parses_yaml_with_safe_loaders_only(tmp_path: Path) -> None:
    files = [p for d in PRODUCT_CODE for p in tracked_files(ROOT / d) if p.suffix == ".py"]
    assert len(files) > 20
    problems = [problem for path in files for problem in yaml_problems(path)]
    assert problems == []
    # The checker flags what it must, so the empty list above means something.
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import yaml\nfrom yaml import Loader\n"
        "yaml.load(s)\nyaml.load(s, Loader=yaml.Loader)\nyaml.unsafe_load(s)\n"
        "yaml.load_all(s, yaml.FullLoader)\n"
        "_L = getattr(yaml, 'CLoader', yaml.Loader)\nyaml.load_all(s, Loader=_L)\n"
        "_S = getattr(yaml, 'CSafeLoader', yaml.SafeLoader)\nyaml.load_all(s, Loader=_S)\n"
        "yaml.safe_load(s)\nyaml.load(s, Loader=yaml.CSafeLoader)\n"
    )
    flagged = yaml_problems(sample)
    # the import; load without a Loader; yaml.Loader (x2: the name, the call);
    # unsafe_load; yaml.FullLoader (x2); the getattr alias's default yaml.Loader, and the
    # call through it. The safe forms pass.
    assert len(flagged) == 9, flagged
    assert not any(f":{line}:" in " ".join(flagged) for line in (10, 11, 12)), flagged


PAYLOAD = '!!python/object/apply:os.system ["touch {marker}"]'


def test_a_python_tag_in_any_yaml_input_is_refused_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    payload = PAYLOAD.format(marker=marker)

    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(CATALOG_A + f"  extra: {payload}\n")
    assert cli.main(["validate", str(catalog)]) == 1

    snapshot = tmp_path / "snapshot.yaml"
    snapshot.write_text(f"apiVersion: v1\nkind: List\nitems:\n- {payload}\n")
    with pytest.raises(SnapshotError):
        load_snapshot(snapshot)

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(f"apiVersion: v1\nkind: Config\nclusters: {payload}\n")
    done = subprocess.run(
        [sys.executable, "-m", "machine_catalog_cli", "serve", "--kubeconfig", str(kubeconfig)],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert not marker.exists()


# -- secrets ----------------------------------------------------------------------------------


def secret(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex}"


def kubeconfig_with(path: Path, server: str, token: str, user: str = "u") -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": user, "user": {"token": token}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": user}}],
                "current-context": "x",
            }
        )
    )
    return path


def test_no_secret_reaches_the_log_or_an_answer(tmp_path: Path) -> None:
    token, bearer, cookie, password, env_value = (
        secret(k) for k in ("kubeconfig", "bearer", "cookie", "password", "env")
    )
    secrets = {token, bearer, cookie, password, env_value}
    answers: list[bytes] = []
    with FakeApiServer() as fake:
        fake.add("nodes", make_node("n0", cpu="8", instance_type="n2-standard-8"))
        fake.add("pods", make_pod("p0", cpu="1", node="n0"))
        # The API server refuses (401), fails (500) and cuts a stream: error paths log.
        fake.fail_next(1, 401, resource="nodes")
        fake.fail_next(1, 500, resource="pods")
        catalog = tmp_path / "catalog.yaml"
        catalog.write_text(CATALOG_A)
        server = serve(
            tmp_path,
            "--catalog",
            str(catalog),
            "--kubeconfig",
            str(kubeconfig_with(tmp_path / "kubeconfig", fake.url, token)),
            "--log-level",
            "debug",
            "--access-log",
        )
        try:
            ready(server)
            fake.cut_next_event("pods")
            fake.add("pods", make_pod("p1", cpu="1", node="n0"))
            basic = base64.b64encode(f"scheduler:{password}".encode()).decode()
            headers = [
                {"Authorization": f"Bearer {bearer}", "Cookie": f"session={cookie}"},
                {"Authorization": f"Basic {basic}"},
            ]
            pod = scheduler_pod("1")
            pod["spec"]["containers"][0]["env"] = [{"name": "API_KEY", "value": env_value}]
            review = admission_review()
            review["request"]["object"]["spec"]["containers"][0]["env"].append(
                {"name": "API_KEY", "value": env_value}
            )
            denied = copy.deepcopy(review)
            denied["request"]["object"]["metadata"]["annotations"][
                "machine-catalog.io/families"
            ] = "nope"
            bodies = {
                "/scheduler/filter": [extender_args(pod, ["n0", "nope"]), b'{"Pod": 1}'],
                "/scheduler/prioritize": [extender_args(pod, ["n0"]), b"[]"],
                "/webhook/mutate": [orjson.dumps(review), orjson.dumps(denied), b"{"],
            }
            for header in headers:
                for route, route_bodies in bodies.items():
                    for body in route_bodies:
                        reply = server.post(route, body, headers=header)
                        assert reply.status in (200, 400), reply.body
                        answers.append(reply.body)
                for path in ("/readyz", "/healthz", "/metrics", "/nope"):
                    answers.append(server.request("GET", path, headers=header).body)
            wait_until(
                lambda: orjson.loads(server.request("GET", "/readyz").body)["cache"]["pods"] == 2,
                "the cut event arrives",
                10,
            )
        finally:
            assert server.stop() == 0
    log = server.log_text()
    assert "401" in log and "GET /readyz" in log  # the error paths and access log did run
    for value in secrets:
        assert value not in log, f"{value.split('-')[0]} secret in the log"
        assert not any(value.encode() in answer for answer in answers), value.split("-")[0]
    assert basic not in log


BROKEN_KUBECONFIGS = {
    "missing-context": "apiVersion: v1\nkind: Config\nclusters: []\n"
    "users: [{name: u, user: {token: TOKEN}}]\ncontexts: []\ncurrent-context: nowhere\n",
    "yaml-error-on-the-token-line": "apiVersion: v1\nusers:\n"
    "- {name: u, user: {token: TOKEN, : bad}}\n",
    "wrong-shape": "apiVersion: v1\nkind: Config\nclusters: 7\n"
    "users: [{name: u, user: {token: TOKEN}}]\ncurrent-context: x\n",
}


@pytest.mark.parametrize("case", list(BROKEN_KUBECONFIGS))
def test_a_broken_kubeconfig_is_reported_without_its_token(tmp_path: Path, case: str) -> None:
    token = secret("kubeconfig")
    path = tmp_path / "kubeconfig"
    path.write_text(BROKEN_KUBECONFIGS[case].replace("TOKEN", token))
    done = subprocess.run(
        [sys.executable, "-m", "machine_catalog_cli", "serve", "--kubeconfig", str(path)],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )
    assert done.returncode == 1, done.stderr
    assert "cannot configure the Kubernetes client" in done.stderr
    assert token not in done.stderr + done.stdout
    assert "Traceback" not in done.stderr


# -- the webhook's own annotations ---------------------------------------------------------


def forged(family: str, **spec: Any) -> dict[str, Any]:
    """The fixture pod with a complete, well-formed set of the webhook's annotations."""
    review = make_review()
    pod = review["request"]["object"]
    pod["metadata"]["annotations"].update(
        {
            FAMILY_ANNOTATION: family,
            SCU_PER_CORE_ANNOTATION: "1",
            STANDARD_RESOURCES_ANNOTATION: "{}",
            CATALOG_ANNOTATION: "default@0123456789abcdef",
        }
    )
    pod["spec"].update(spec)
    return review


@pytest.fixture(scope="module")
def webhook() -> Webhook:
    return Webhook()


def test_forged_annotations_naming_an_unknown_family_are_denied(webhook: Webhook) -> None:
    response = webhook.review(forged("made-up-family"))
    assert response["allowed"] is False and response["status"]["code"] == 403
    assert "made-up-family" in response["status"]["message"]


def test_forged_annotations_naming_a_retired_family_are_denied(webhook: Webhook) -> None:
    retired = next(f.name for f in webhook.runtime.catalogs.current.families if not f.schedulable)
    response = webhook.review(forged(retired))
    assert response["allowed"] is False and response["status"]["code"] == 403
    assert "retired" in response["status"]["message"] and retired in response["status"]["message"]


def test_a_retired_family_on_a_pod_fixed_to_its_node_is_the_webhooks_own_work(
    webhook: Webhook,
) -> None:
    """A DaemonSet pod is normalized for a retiring node's family (its log agent must run
    there); when the webhook is invoked again on it, it is left alone, not denied."""
    catalog = webhook.runtime.catalogs.current
    retired = next(f for f in catalog.families if not f.schedulable and f.instance_types)
    node = next(
        n
        for n in NODES
        if catalog.match(n["metadata"]["labels"]).families[:1]
        and catalog.match(n["metadata"]["labels"]).families[0].name == retired.name
    )
    fixed = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchFields": [
                            {
                                "key": "metadata.name",
                                "operator": "In",
                                "values": [node["metadata"]["name"]],
                            }
                        ]
                    }
                ]
            }
        }
    }
    # The real thing first: the webhook normalizes the DaemonSet pod for the retired family.
    review = make_review()
    review["request"]["object"]["spec"]["affinity"] = fixed
    first = webhook.review(review)
    assert first["allowed"] is True and "patch" in first
    import jsonpatch

    patched = jsonpatch.apply_patch(
        review["request"]["object"], orjson.loads(base64.b64decode(first["patch"]))
    )
    assert patched["metadata"]["annotations"][FAMILY_ANNOTATION] == retired.name
    # Reinvocation with what it produced: allowed, unchanged.
    again = webhook.review(make_review(patched))
    assert again["allowed"] is True and "patch" not in again


def test_forged_annotations_naming_a_schedulable_family_are_taken_at_their_word(
    webhook: Webhook,
) -> None:
    """All four, consistent and naming a family that takes new pods: indistinguishable from
    the webhook's own reinvocation, and worth no more than ``normalize: disabled``. Its
    containers are absent from the (empty) SCU record, so they are normalized as new ones
    with the recorded factor, which must be the family's."""
    family = next(f for f in webhook.runtime.catalogs.current.families if f.schedulable)
    assert family.factor == 1  # forged() records scu-per-core "1"
    review = forged(family.name)
    response = webhook.review(review)
    assert response["allowed"] is True
    ops = orjson.loads(base64.b64decode(response["patch"]))
    # Factor 1: the values stay; the pin is added (the pod had none); the record now holds
    # every container.
    assert all(
        op["path"].endswith(("/cpu", "standard-resources"))
        or op["path"].startswith("/spec/affinity/nodeAffinity")
        for op in ops
    )
    assert any(op["path"].startswith("/spec/affinity/nodeAffinity") for op in ops)
    record = orjson.loads(ops[-1]["value"])
    assert set(record) == {"containers", "initContainers"}


def test_forged_annotations_with_another_factor_than_the_familys_are_denied(
    webhook: Webhook,
) -> None:
    family = next(
        f for f in webhook.runtime.catalogs.current.families if f.schedulable and f.factor != 1
    )
    review = forged(family.name)
    response = webhook.review(review)
    assert response["allowed"] is False and response["status"]["code"] == 403
    assert "scu-per-core" in response["status"]["message"]
