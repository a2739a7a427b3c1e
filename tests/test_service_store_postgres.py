"""The assessment store on a real PostgreSQL server (the same checks as on SQLite, in short).

Runs when BONEAGE_TEST_POSTGRES_URL names an empty database, e.g.
``postgresql+psycopg://postgres@localhost:55432/boneage`` (needs the ``postgres`` extra); skipped otherwise.
"""

import os
import threading

import pytest

URL = os.environ.get("BONEAGE_TEST_POSTGRES_URL")
pytestmark = pytest.mark.skipif(not URL, reason="BONEAGE_TEST_POSTGRES_URL not set (no PostgreSQL server to test against)")


def test_store_on_postgresql_keeps_every_record(tmp_path):
    pytest.importorskip("psycopg", reason="psycopg not installed (pip install -e '.[postgres]')")
    from boneage.service.store import AssessmentStore

    store = AssessmentStore(tmp_path, URL)
    before = store.count()
    record = store.add_assessment(b"pg-image", "x.png", "image/png", {"sex": "F", "chronological_age_months": 100.0},
                                  {"status": "ok", "bone_age_months": 101.5, "sds": 0.1}, "m", "v", "api")
    store.add_decision(record["id"], "corrected", reader_bone_age_months=110, comment="looks older")
    store.add_decision(record["id"], "accepted")

    def add(k):
        for i in range(10):
            store.add_assessment(f"pg-{k}-{i}".encode(), "y.png", "image/png", {"sex": "M"},
                                 {"status": "ok", "bone_age_months": 50.0}, "m", "v", "api")

    threads = [threading.Thread(target=add, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = store.get(record["id"])
    assert got["bone_age_months"] == 101.5  # the reader's correction sits beside it
    assert [d["decision"] for d in got["decisions"]] == ["corrected", "accepted"]
    assert store.count() == before + 81
    store.close()
    reopened = AssessmentStore(tmp_path, URL)
    assert reopened.count() == before + 81 and reopened.schema_revision == "0001"
    reopened.close()
