"""Loading catalog files, hot reload through a ConfigMap symlink swap, keep-last-good."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.configmap import ConfigMapVolume

from machine_catalog.catalog import Catalog
from machine_catalog.loading import (
    CatalogSource,
    ReloadFailure,
    default_catalog_path,
    load_catalog,
    packaged_file,
    parse_catalog,
)
from machine_catalog.validation import CatalogInvalid

CATALOG_YAML = """\
# a comment that must not change the hash
apiVersion: machine-catalog.io/v1alpha1
kind: MachineCatalog
metadata:
  name: reload
spec:
  baseline: base
  families:
    - name: base
      scuPerCore: 1.0
      instanceTypes: [b.large]
    - name: fast
      scuPerCore: {factor}
      instanceTypes: [f.large]
"""


def catalog_text(factor: str = "1.25") -> str:
    return CATALOG_YAML.format(factor=factor)


BROKEN = catalog_text("0")  # valid YAML, invalid catalog: spec.families[1].scuPerCore


# -- reading files -----------------------------------------------------------------------


def test_yaml_and_json_give_the_same_catalog(tmp_path: Path) -> None:
    as_yaml = tmp_path / "c.yaml"
    as_yaml.write_text(catalog_text())
    as_json = tmp_path / "c.json"
    as_json.write_text(json.dumps(yaml.safe_load(catalog_text())))
    a, b = load_catalog(as_yaml), load_catalog(as_json)
    assert a.hash == b.hash
    assert a.source == str(as_yaml)
    assert a.version == f"reload@{a.hash}"


def test_bad_yaml_reports_the_line(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("apiVersion: x\nkind: MachineCatalog\nspec: [unclosed\nmore: 1\n")
    with pytest.raises(CatalogInvalid) as info:
        load_catalog(path)
    (error,) = info.value.errors
    assert "not valid YAML/JSON at line 4" in error.message
    assert info.value.source == str(path)


def test_yaml_tags_are_not_executed() -> None:
    with pytest.raises(CatalogInvalid, match="not valid YAML"):
        parse_catalog("!!python/object/apply:os.system ['true']\n")


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(CatalogInvalid, match="not UTF-8"):
        load_catalog(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CatalogInvalid, match="cannot read: No such file"):
        load_catalog(tmp_path / "absent.yaml")


def test_empty_file_is_invalid_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("# only a comment\n")
    with pytest.raises(CatalogInvalid, match="must be a mapping"):
        load_catalog(path)


def test_hash_ignores_comments_key_order_and_spelling_of_a_factor() -> None:
    base = parse_catalog(catalog_text())
    data = yaml.safe_load(catalog_text())
    reordered = {"spec": data["spec"], "metadata": data["metadata"], "kind": data["kind"]}
    reordered["apiVersion"] = data["apiVersion"]
    reordered["spec"]["families"][1] = dict(reversed(list(data["spec"]["families"][1].items())))
    assert Catalog.from_data(reordered).hash == base.hash
    assert parse_catalog("# other comment\n" + catalog_text()).hash == base.hash
    assert parse_catalog(catalog_text('"1250m"')).hash == base.hash
    assert parse_catalog(catalog_text("1.250")).hash == base.hash


def test_hash_changes_with_a_factor() -> None:
    assert parse_catalog(catalog_text("1.25")).hash != parse_catalog(catalog_text("1.26")).hash


def test_the_packaged_files() -> None:
    assert default_catalog_path() == packaged_file("default-catalog.yaml")
    assert load_catalog().hash == load_catalog(default_catalog_path()).hash
    from extender.feeds.snapshot import load_snapshot

    nodes, _pods = load_snapshot(packaged_file("demo-snapshot.json"))
    assert nodes, "the demo snapshot must hold nodes for `make run` to schedule on"


@pytest.fixture
def volume(tmp_path: Path) -> ConfigMapVolume:
    root = tmp_path / "config"
    root.mkdir()
    return ConfigMapVolume(root, catalog_text("1.25"))


def test_poll_notices_a_symlink_swap(volume: ConfigMapVolume) -> None:
    source = CatalogSource(volume.path)
    before = source.current
    assert source.poll() is False  # nothing changed yet
    volume.update(catalog_text("1.5"))
    assert source.poll() is True
    assert source.current.hash != before.hash
    assert source.current.by_name["fast"].scu_per_core == 1.5
    assert source.reloads == 1
    assert source.poll() is False


def test_reload_of_identical_content_is_not_a_swap(volume: ConfigMapVolume) -> None:
    source = CatalogSource(volume.path)
    before = source.current
    volume.update("# reformatted\n" + catalog_text("1.25"))
    assert source.poll() is False
    assert source.current is before


def test_watcher_thread_notices_a_swap_within_a_deadline(volume: ConfigMapVolume) -> None:
    source = CatalogSource(volume.path)
    seen: list[Catalog] = []
    swapped = threading.Event()

    def listener(catalog: Catalog) -> None:
        seen.append(catalog)
        swapped.set()

    source.on_reload(listener)
    source.start(interval=0.02)
    try:
        started = time.monotonic()
        volume.update(catalog_text("2"))
        assert swapped.wait(timeout=5), "the watcher did not reload within 5 s"
        assert time.monotonic() - started < 5
        assert seen[-1] is source.current
        assert source.current.by_name["fast"].scu_per_core == 2
    finally:
        source.stop()


def test_a_broken_file_keeps_the_last_good_catalog(volume: ConfigMapVolume) -> None:
    source = CatalogSource(volume.path)
    good = source.current
    failures: list[ReloadFailure] = []
    source.on_failure(failures.append)

    volume.update(BROKEN)
    assert source.poll() is False
    assert source.current is good
    assert source.reload_failures == 1
    assert source.last_failure is not None
    assert [str(e) for e in source.last_failure.errors] == [
        "spec.families[1].scuPerCore: must be in (0, 16], got 0"
    ]
    assert failures == [source.last_failure]
    assert source.last_failure.to_json()["errors"][0].startswith("spec.families[1].scuPerCore")

    assert source.poll() is False  # unchanged file: not retried, not counted again
    assert source.reload_failures == 1

    volume.update(catalog_text("1.75"))
    assert source.poll() is True
    assert source.last_failure is None
    assert source.current.by_name["fast"].scu_per_core == 1.75


def test_a_failing_listener_does_not_stop_the_swap(volume: ConfigMapVolume) -> None:
    source = CatalogSource(volume.path)
    calls: list[str] = []

    def bad(_: Catalog) -> None:
        calls.append("bad")
        raise RuntimeError("listener bug")

    source.on_reload(bad)
    source.on_reload(lambda c: calls.append(c.version))
    volume.update(catalog_text("1.5"))
    assert source.reload() is True
    assert calls == ["bad", source.current.version]


def test_a_worker_booting_on_an_invalid_file_uses_the_persisted_last_good(
    volume: ConfigMapVolume, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    first = CatalogSource(volume.path, state_dir=state)  # the first worker persists it
    assert (state / "last-good-catalog.json").exists()

    volume.update(BROKEN)
    failures: list[Any] = []
    restarted = CatalogSource(volume.path, state_dir=state)  # a worker (re)starting now
    restarted.on_failure(failures.append)
    assert restarted.current.hash == first.current.hash
    assert restarted.reload_failures == 1
    assert restarted.last_failure is not None
    assert restarted.last_failure.errors[0].path == "spec.families[1].scuPerCore"

    volume.update(catalog_text("1.5"))  # the fix reaches the restarted worker too
    assert restarted.poll() is True
    assert restarted.current.by_name["fast"].scu_per_core == 1.5


def test_without_a_last_good_catalog_an_invalid_file_fails_the_boot(
    volume: ConfigMapVolume, tmp_path: Path
) -> None:
    volume.update(BROKEN)
    with pytest.raises(CatalogInvalid):
        CatalogSource(volume.path)
    with pytest.raises(CatalogInvalid):
        CatalogSource(volume.path, state_dir=tmp_path / "empty-state")


def test_a_reload_persists_the_new_catalog_for_later_workers(
    volume: ConfigMapVolume, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    source = CatalogSource(volume.path, state_dir=state)
    volume.update(catalog_text("1.5"))
    assert source.poll() is True
    assert load_catalog(state / "last-good-catalog.json").hash == source.current.hash
