"""Node -> family matching, selector semantics, and the affinity terms built from them."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.oracles import requirement_terms_select

from machine_catalog.catalog import Catalog
from machine_catalog.matching import (
    BETA_INSTANCE_TYPE_LABEL,
    INSTANCE_TYPE_LABEL,
    family_selector_terms,
    instance_type_of,
    selected_by_beta_only,
)
from machine_catalog.model import (
    API_VERSION,
    KIND,
    CatalogSpec,
    Family,
    LabelSelector,
    LabelSelectorRequirement,
    MachineCatalogDocument,
    Metadata,
)
from machine_catalog.selectors import requirement_matches, selector_matches

FIXTURES = Path(__file__).parent / "fixtures"
NFD = "feature.node.kubernetes.io/cpu-model."


def fixture_nodes() -> dict[str, dict[str, Any]]:
    data = json.loads((FIXTURES / "nodes-real-world.json").read_text())
    return {n["metadata"]["name"]: n for n in data["items"]}


def labels_of(node: Mapping[str, Any]) -> dict[str, str]:
    return dict(node["metadata"]["labels"])


def make_catalog(families: Sequence[Family], baseline: str | None = None) -> Catalog:
    spec = CatalogSpec(baseline=baseline or families[0].name, families=tuple(families))
    return Catalog(
        MachineCatalogDocument(
            api_version=API_VERSION, kind=KIND, metadata=Metadata(name="t"), spec=spec
        )
    )


def req(key: str, operator: str, *values: str) -> LabelSelectorRequirement:
    return LabelSelectorRequirement(key=key, operator=operator, values=values)


# -- selector operators --------------------------------------------------------------------

LABELS = {"zone": "a", "gen": "7", "odd": "1_0", "signed": "-3", "big": "9" * 20}


@pytest.mark.parametrize(
    ("key", "operator", "values", "expected"),
    [
        ("zone", "In", ["a", "b"], True),
        ("zone", "In", ["b"], False),
        ("missing", "In", ["a"], False),
        ("zone", "NotIn", ["b"], True),
        ("zone", "NotIn", ["a"], False),
        ("missing", "NotIn", ["a"], True),  # Kubernetes: an absent key satisfies NotIn
        ("zone", "Exists", [], True),
        ("missing", "Exists", [], False),
        ("missing", "DoesNotExist", [], True),
        ("zone", "DoesNotExist", [], False),
        ("gen", "Gt", ["6"], True),
        ("gen", "Gt", ["7"], False),  # strictly greater
        ("gen", "Lt", ["8"], True),
        ("gen", "Lt", ["7"], False),
        ("signed", "Lt", ["0"], True),
        ("zone", "Gt", ["0"], False),  # non-integer label: no match, no exception
        ("zone", "Lt", ["100"], False),
        ("odd", "Gt", ["0"], False),  # int("1_0") == 10 in Python; ParseInt refuses it
        ("big", "Gt", ["0"], False),  # beyond int64: ParseInt refuses it
        ("missing", "Gt", ["0"], False),
        ("missing", "Lt", ["0"], False),
    ],
)
def test_requirement_operators(key: str, operator: str, values: list[str], expected: bool) -> None:
    assert requirement_matches(LABELS, key, operator, values) is expected


def test_unknown_operator_is_an_error_not_a_silent_mismatch() -> None:
    with pytest.raises(ValueError, match="Equals"):
        requirement_matches(LABELS, "zone", "Equals", ["a"])


def test_selector_needs_all_labels_and_all_expressions() -> None:
    selector = LabelSelector(
        match_labels={"zone": "a"},
        match_expressions=(req("gen", "Gt", "5"), req("x", "DoesNotExist")),
    )
    assert selector_matches(selector, LABELS)
    assert not selector_matches(selector, {**LABELS, "zone": "b"})
    assert not selector_matches(selector, {**LABELS, "gen": "5"})
    assert not selector_matches(selector, {**LABELS, "x": ""})


# -- matching nodes --------------------------------------------------------------------------

M6I = Family(name="m6i", scu_per_core="1.18", instance_types=("m6i.2xlarge", "m6i.4xlarge"))
S5 = Family(name="s5", scu_per_core=1, instance_types=("S5.2XLARGE16",))
SPR = Family(
    name="spr",
    scu_per_core="1.3",
    node_selector=LabelSelector(
        match_labels={NFD + "vendor_id": "Intel", NFD + "family": "6"},
        match_expressions=(req(NFD + "id", "Gt", "142"), req(INSTANCE_TYPE_LABEL, "DoesNotExist")),
    ),
)
CATALOG = make_catalog([S5, M6I, SPR])


def test_instance_type_prefers_the_ga_label() -> None:
    assert instance_type_of({INSTANCE_TYPE_LABEL: "a", BETA_INSTANCE_TYPE_LABEL: "b"}) == "a"
    assert instance_type_of({BETA_INSTANCE_TYPE_LABEL: "b"}) == "b"
    assert instance_type_of({}) is None


def test_match_by_ga_instance_type_label() -> None:
    node = fixture_nodes()["ip-10-0-1-23.ec2.internal"]
    match = CATALOG.match(labels_of(node))
    assert match.status == "matched"
    assert match.family is M6I
    assert match.describe() == "instance type m6i.2xlarge: family m6i"


def test_match_by_beta_label_only() -> None:
    labels = labels_of(fixture_nodes()["10.0.16.42"])
    del labels[INSTANCE_TYPE_LABEL]
    match = CATALOG.match(labels)
    assert match.family is S5
    assert match.instance_type == "S5.2XLARGE16"


def test_ga_label_wins_over_a_stale_beta_label() -> None:
    labels = {INSTANCE_TYPE_LABEL: "m6i.4xlarge", BETA_INSTANCE_TYPE_LABEL: "S5.2XLARGE16"}
    assert CATALOG.match(labels).family is M6I


def test_match_by_nfd_node_selector_on_bare_metal() -> None:
    node = fixture_nodes()["rack12-node07"]
    match = CATALOG.match(labels_of(node))
    assert match.status == "matched"
    assert match.family is SPR
    assert match.instance_type is None
    assert "no instance-type label" in match.describe()


def test_unknown_node() -> None:
    node = fixture_nodes()["gke-prod-pool-n2-8f7c2a1b-x7k2"]
    match = CATALOG.match(labels_of(node))
    assert match.status == "unknown"
    assert match.family is None and match.families == ()
    assert match.describe() == "instance type n2-standard-8: matches no family of the catalog"


def test_a_node_two_families_claim_is_ambiguous_never_picked() -> None:
    intel = Family(
        name="intel",
        scu_per_core=1,
        node_selector=LabelSelector(match_labels={NFD + "vendor_id": "Intel"}),
    )
    catalog = make_catalog([intel, SPR])
    match = catalog.match(labels_of(fixture_nodes()["rack12-node07"]))
    assert match.status == "ambiguous"
    assert match.family is None
    assert [f.name for f in match.families] == ["intel", "spr"]
    assert "ambiguous, matches families intel, spr" in match.describe()


def test_instance_type_and_selector_of_two_families_is_ambiguous() -> None:
    amd = Family(
        name="by-arch",
        scu_per_core=1,
        node_selector=LabelSelector(match_labels={"kubernetes.io/arch": "amd64"}),
    )
    catalog = make_catalog([M6I, amd])
    match = catalog.match(labels_of(fixture_nodes()["ip-10-0-1-23.ec2.internal"]))
    assert match.status == "ambiguous"


# -- affinity terms select exactly the matched nodes ------------------------------------------


def test_terms_of_an_instance_type_family() -> None:
    terms = family_selector_terms(M6I)
    assert terms == [
        [{"key": INSTANCE_TYPE_LABEL, "operator": "In", "values": ["m6i.2xlarge", "m6i.4xlarge"]}],
        [
            {"key": INSTANCE_TYPE_LABEL, "operator": "DoesNotExist"},
            {
                "key": BETA_INSTANCE_TYPE_LABEL,
                "operator": "In",
                "values": ["m6i.2xlarge", "m6i.4xlarge"],
            },
        ],
    ]


def test_without_beta_an_instance_type_family_has_only_the_ga_term() -> None:
    """The term the API server warns about (``beta.kubernetes.io/instance-type is
    deprecated``) is left out; a selector family has no beta term to leave out."""
    assert family_selector_terms(M6I, beta=False) == [
        [{"key": INSTANCE_TYPE_LABEL, "operator": "In", "values": ["m6i.2xlarge", "m6i.4xlarge"]}]
    ]
    assert family_selector_terms(SPR, beta=False) == family_selector_terms(SPR)
    named = [r["key"] for t in family_selector_terms(M6I, beta=False) for r in t]
    assert BETA_INSTANCE_TYPE_LABEL not in named


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({BETA_INSTANCE_TYPE_LABEL: "m6i.2xlarge"}, True),
        ({BETA_INSTANCE_TYPE_LABEL: "m6i.4xlarge", "zone": "a"}, True),
        ({INSTANCE_TYPE_LABEL: "m6i.2xlarge", BETA_INSTANCE_TYPE_LABEL: "m6i.2xlarge"}, False),
        ({INSTANCE_TYPE_LABEL: "m6i.2xlarge"}, False),
        # GA wins: a stale beta value of the family does not make the node the family's
        ({INSTANCE_TYPE_LABEL: "x1.large", BETA_INSTANCE_TYPE_LABEL: "m6i.2xlarge"}, False),
        ({BETA_INSTANCE_TYPE_LABEL: "m5.large"}, False),
        ({}, False),
    ],
)
def test_selected_by_beta_only(labels: dict[str, str], expected: bool) -> None:
    assert selected_by_beta_only(M6I, labels) is expected
    assert requirement_terms_select(family_selector_terms(M6I, beta=False), "n", labels) is (
        requirement_terms_select(family_selector_terms(M6I), "n", labels) and not expected
    )


def test_terms_select_the_fixture_nodes_the_catalog_assigns() -> None:
    for node in fixture_nodes().values():
        labels = labels_of(node)
        claimed = {f.name for f in CATALOG.match(labels).families}
        selected = {
            f.name
            for f in CATALOG.families
            if requirement_terms_select(family_selector_terms(f), "n", labels)
        }
        assert selected == claimed, node["metadata"]["name"]


KEYS = ["zone", "gen", NFD + "vendor_id", INSTANCE_TYPE_LABEL, BETA_INSTANCE_TYPE_LABEL]
SELECTOR_VALUES = ["a", "b", "5", "10", "t1", "t2"]
INTEGERS = ["-1", "0", "5", "10"]
INSTANCE_TYPES = ["t1", "t2", "t3", "t4"]
NODE_VALUES = [*SELECTOR_VALUES, *INTEGERS, "t3", "t4", "1_0", "07", ""]


@st.composite
def requirements(draw: st.DrawFn) -> LabelSelectorRequirement:
    key = draw(st.sampled_from(KEYS))
    op = draw(st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]))
    if op in ("In", "NotIn"):
        values = draw(st.lists(st.sampled_from(SELECTOR_VALUES), min_size=1, max_size=3))
    elif op in ("Gt", "Lt"):
        values = [draw(st.sampled_from(INTEGERS))]
    else:
        values = []
    return req(key, op, *values)


@st.composite
def selectors(draw: st.DrawFn) -> LabelSelector | None:
    labels = draw(
        st.dictionaries(st.sampled_from(KEYS), st.sampled_from(SELECTOR_VALUES), max_size=2)
    )
    exprs = draw(st.lists(requirements(), max_size=3))
    if not labels and not exprs:
        return None
    return LabelSelector(match_labels=labels, match_expressions=tuple(exprs))


@st.composite
def catalogs(draw: st.DrawFn) -> Catalog:
    count = draw(st.integers(1, 4))
    owner = draw(st.lists(st.integers(-1, count - 1), min_size=4, max_size=4))  # type -> family
    families = []
    for i in range(count):
        types = tuple(t for t, o in zip(INSTANCE_TYPES, owner, strict=True) if o == i)
        selector = draw(selectors())
        if not types and selector is None:
            selector = LabelSelector(match_labels={"zone": "a"})
        families.append(
            Family(name=f"f{i}", scu_per_core=1, instance_types=types, node_selector=selector)
        )
    return make_catalog(families)


node_labels = st.dictionaries(st.sampled_from(KEYS), st.sampled_from(NODE_VALUES), max_size=5)


@settings(max_examples=200, deadline=None)
@given(catalog=catalogs(), labels=node_labels)
def test_affinity_terms_select_exactly_the_nodes_match_assigns(
    catalog: Catalog, labels: dict[str, str]
) -> None:
    claimed = {f.name for f in catalog.match(labels).families}
    for family in catalog.families:
        selected = requirement_terms_select(family_selector_terms(family), "n", labels)
        assert selected == (family.name in claimed), (family, labels)


@settings(max_examples=200, deadline=None)
@given(catalog=catalogs(), labels=node_labels)
def test_leaving_out_the_beta_term_loses_exactly_the_beta_only_nodes(
    catalog: Catalog, labels: dict[str, str]
) -> None:
    """What the cache counts (``selected_by_beta_only``) is exactly what the pin without
    the beta term no longer selects: the webhook drops the term only when no node needs it."""
    for family in catalog.families:
        full = requirement_terms_select(family_selector_terms(family), "n", labels)
        ga_only = requirement_terms_select(family_selector_terms(family, beta=False), "n", labels)
        assert full == (ga_only or selected_by_beta_only(family, labels)), (family, labels)
