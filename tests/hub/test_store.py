from __future__ import annotations

from layersync_middleware.hub import Store


def ev(eid: str, name: str = "purchase", **user_data: str) -> dict[str, object]:
    return {"event_id": eid, "event_name": name, "user_data": user_data}


def test_groups_sources_and_duplicates() -> None:
    store = Store()
    assert store.add("s", "browser", ev("pur_1"))
    assert store.add("s", "server", ev("pur_1", em="a" * 64, client_ip_address="1.2.3.4"))
    assert not store.add("s", "server", ev("pur_1"))
    assert store.add("s", "server", ev("pur_2"))
    groups = {g["event_id"]: g for g in store.groups()}
    assert groups["pur_1"]["paired"] and groups["pur_1"]["duplicates"] == 1
    assert groups["pur_2"]["sources"] == ["server"]
    assert store.events(limit=10)[0]["event"]["event_id"] == "pur_2"
    hashed = [e["hashed_fields"] for e in store.events() if e["event"]["user_data"]]
    assert hashed == [["em"]]
    store.clear()
    assert store.groups() == []


def test_sites_are_separate() -> None:
    store = Store()
    store.add("a", "server", ev("x_1"))
    store.add("b", "server", ev("x_1"))
    assert len(store.groups()) == 2 and len(store.groups(site_id="a")) == 1
