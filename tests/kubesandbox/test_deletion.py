"""Fidelity point 5: finalizers, deletionTimestamp, owner references, namespaces."""

from __future__ import annotations

from tests.kubesandbox.conftest import Api, eventually, unique

CONFIGMAPS = "/api/v1/namespaces/default/configmaps"


def _owned_by(owner: dict) -> dict:
    meta = owner["metadata"]
    return {
        "ownerReferences": [
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "name": meta["name"],
                "uid": meta["uid"],
                "blockOwnerDeletion": True,
            }
        ]
    }


def test_a_finalizer_holds_the_object_with_a_deletion_timestamp(api: Api) -> None:
    name = unique("cm")
    api.post(CONFIGMAPS, {"metadata": {"name": name, "finalizers": ["example.com/hold"]}})
    reply = api.delete(f"{CONFIGMAPS}/{name}")
    assert reply.status in (200, 202)
    held = api.get(f"{CONFIGMAPS}/{name}").body
    assert held["metadata"]["deletionTimestamp"]
    assert held["metadata"]["finalizers"] == ["example.com/hold"]


def test_removing_the_last_finalizer_deletes_the_object(api: Api) -> None:
    name = unique("cm")
    api.post(
        CONFIGMAPS,
        {"metadata": {"name": name, "finalizers": ["a.example.com/x", "b.example.com/y"]}},
    )
    api.delete(f"{CONFIGMAPS}/{name}")
    api.patch(f"{CONFIGMAPS}/{name}", {"metadata": {"finalizers": ["b.example.com/y"]}})
    assert api.get(f"{CONFIGMAPS}/{name}").status == 200
    api.patch(f"{CONFIGMAPS}/{name}", {"metadata": {"finalizers": None}})
    api.wait_gone(f"{CONFIGMAPS}/{name}")


def test_no_new_finalizers_while_deleting(api: Api) -> None:
    name = unique("cm")
    api.post(CONFIGMAPS, {"metadata": {"name": name, "finalizers": ["example.com/hold"]}})
    api.delete(f"{CONFIGMAPS}/{name}")
    reply = api.patch(
        f"{CONFIGMAPS}/{name}",
        {"metadata": {"finalizers": ["example.com/hold", "example.com/more"]}},
    )
    assert reply.status == 422
    api.patch(f"{CONFIGMAPS}/{name}", {"metadata": {"finalizers": None}})


def test_owned_objects_are_collected_in_the_background(api: Api) -> None:
    owner = api.post(CONFIGMAPS, {"metadata": {"name": unique("owner")}}).body
    child = unique("child")
    api.post(CONFIGMAPS, {"metadata": {"name": child, **_owned_by(owner)}})
    api.delete(f"{CONFIGMAPS}/{owner['metadata']['name']}", {"propagationPolicy": "Background"})
    api.wait_gone(f"{CONFIGMAPS}/{child}", timeout=60)


def test_foreground_deletion_waits_for_the_dependents(api: Api) -> None:
    owner = api.post(CONFIGMAPS, {"metadata": {"name": unique("owner")}}).body
    owner_path = f"{CONFIGMAPS}/{owner['metadata']['name']}"
    child = unique("child")
    api.post(
        CONFIGMAPS,
        {"metadata": {"name": child, "finalizers": ["example.com/hold"], **_owned_by(owner)}},
    )
    api.delete(owner_path, {"propagationPolicy": "Foreground"})
    held = api.get(owner_path).body
    assert "foregroundDeletion" in held["metadata"]["finalizers"]
    eventually(lambda: api.get(f"{CONFIGMAPS}/{child}").body["metadata"].get("deletionTimestamp"))
    assert api.get(owner_path).status == 200  # still waiting for its dependent
    api.patch(f"{CONFIGMAPS}/{child}", {"metadata": {"finalizers": None}})
    api.wait_gone(f"{CONFIGMAPS}/{child}", timeout=60)
    api.wait_gone(owner_path, timeout=60)


def test_orphaning_keeps_the_dependents_without_the_owner_reference(api: Api) -> None:
    owner = api.post(CONFIGMAPS, {"metadata": {"name": unique("owner")}}).body
    child = unique("child")
    api.post(CONFIGMAPS, {"metadata": {"name": child, **_owned_by(owner)}})
    api.delete(f"{CONFIGMAPS}/{owner['metadata']['name']}", {"propagationPolicy": "Orphan"})
    api.wait_gone(f"{CONFIGMAPS}/{owner['metadata']['name']}", timeout=60)
    assert "ownerReferences" not in api.get(f"{CONFIGMAPS}/{child}").body["metadata"]


def test_deleting_a_namespace_deletes_its_content(api: Api) -> None:
    ns = unique("ns")
    api.post("/api/v1/namespaces", {"metadata": {"name": ns}})
    api.post(f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": "inside"}})
    api.delete(f"/api/v1/namespaces/{ns}")
    api.wait_gone(f"/api/v1/namespaces/{ns}/configmaps/inside", timeout=60)
    api.wait_gone(f"/api/v1/namespaces/{ns}", timeout=60)


def test_delete_with_a_stale_precondition_is_a_409(api: Api) -> None:
    name = unique("cm")
    api.post(CONFIGMAPS, {"metadata": {"name": name}})
    reply = api.delete(f"{CONFIGMAPS}/{name}", {"preconditions": {"uid": "not-the-uid"}})
    assert reply.status == 409
    assert api.get(f"{CONFIGMAPS}/{name}").status == 200
