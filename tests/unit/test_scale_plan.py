"""`bench scale`'s plan: stage sizes, the split of replicas and the manifests it applies."""

from __future__ import annotations

from autonet.cli.scale import PROBE_VPC, ScaleOptions, base_documents, split, stage_automatons, stage_sizes
from autonet.model import manifest
from autonet.model.kinds import KindRegistry, builtin_kinds


def test_stages_grow_to_the_total_and_replicas_add_up() -> None:
    assert stage_sizes(2000) == [200, 667, 2000]
    assert stage_sizes(30) == [3, 10, 30]
    assert stage_sizes(2) == [1, 2]
    assert split(10, 3) == [4, 3, 3]
    automatons = stage_automatons(2001, 4)
    assert sum(a["spec"]["replicas"] for a in automatons.values()) == 2001
    assert automatons["sv0-srv"]["spec"]["replicas"] == 251  # half servers (rounded up) ...
    assert automatons["sv0-cli"]["spec"]["replicas"] == 250  # ... half clients


def test_defaults_and_bounds() -> None:
    assert ScaleOptions().resolved(quick=False) == (50, 2000, 4)
    assert ScaleOptions().resolved(quick=True) == (10, 300, 1)
    assert ScaleOptions(hosts=200, instances=20000).resolved(quick=False) == (200, 20000, 40)
    assert ScaleOptions(instances=4, vpcs=9).resolved(quick=False)[2] == 2  # 2 instances per VPC at least


def test_the_manifests_are_valid_and_in_the_lab_ranges() -> None:
    docs = base_documents(2) + list(stage_automatons(40, 2).values())
    objs = manifest.validate(docs, KindRegistry(builtin_kinds()), [])
    assert {o.name for o in objs if o.kind == "Vpc"} == {PROBE_VPC, "sv0", "sv1"}
    for obj in objs:
        for cidr in obj.spec.get("cidrs", []):
            assert cidr.startswith(("100.96.", "fd00:96:"))
