"""The assessment store: schema by Alembic, SQLite WAL, records and readers' decisions, images, restarts, threads."""

from __future__ import annotations

import contextlib
import io
import logging
import re
import subprocess
import sys
import threading

import pytest
import sqlalchemy as sa
from alembic import command

from boneage.errors import BoneAgeError, InvalidInputError
from boneage.service import AssessmentStore, NotFound
from boneage.service.store import DatabaseVersionError, migration_config

PATIENT_NAME = "Doe^Jane"
RESULT = {
    "status": "ok",
    "bone_age_months": 131.5,
    "sds": 0.42,
    "reading": "within the normal range",
    "patient": {"name": PATIENT_NAME, "id": "PID-778899"},
}
INPUTS = {"sex": "F", "chronological_age_months": 120.0, "height_cm": 140.2}


def add(store, image=b"\x89PNG fake image", filename="hand.png", result=RESULT, inputs=INPUTS, source="api"):
    return store.add_assessment(image, filename, "image/png", inputs, result, "ensemble-2xglobal", "0.1.0", source)


@pytest.fixture
def store(tmp_path):
    with AssessmentStore(tmp_path / "data") as opened:
        yield opened


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(migration_config()).get_current_head()


def test_importing_the_package_is_light():
    code = "import sys, boneage.service; print('sqlalchemy' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
    # the CLI imports the DICOM node's module to build its parser: that must not load the heavy parts either
    code = ("import sys, boneage.service.dicom_node; "
            "print(*(name in sys.modules for name in ('torch', 'pynetdicom', 'pydicom', 'sqlalchemy', 'fastapi')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False"] * 5


def test_fresh_store_creates_schema_with_alembic_and_uses_wal(store, tmp_path):
    assert (tmp_path / "data" / "boneage.sqlite3").is_file()
    assert store.schema_revision == head_revision() == "0001"
    with store.engine.connect() as connection:
        assert connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one() == "0001"
        assert connection.execute(sa.text("PRAGMA journal_mode")).scalar_one().lower() == "wal"
        assert connection.execute(sa.text("PRAGMA foreign_keys")).scalar_one() == 1
        assert connection.execute(sa.text("PRAGMA busy_timeout")).scalar_one() >= 1000
        tables = set(sa.inspect(connection).get_table_names())
    assert {"assessments", "reader_decisions", "alembic_version"} <= tables


def test_models_match_the_migrations(store):
    with store.engine.begin() as connection:
        command.check(migration_config(connection))  # raises when autogenerate would find a difference


def test_migrations_render_for_postgresql():
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        command.upgrade(migration_config(url="postgresql+psycopg://user:secret@db.example/boneage"), "head", sql=True)
    sql = out.getvalue()
    assert "CREATE TABLE assessments" in sql and "TIMESTAMP WITH TIME ZONE" in sql
    assert "FOREIGN KEY(assessment_id) REFERENCES assessments (id)" in sql


def test_add_and_get_round_trip(store):
    record = add(store, filename="C:\\scans\\left hand.PNG")
    assert isinstance(record["id"], str)
    assert record["created_at"].endswith("Z")
    assert record["sex"] == "F" and record["chronological_age_months"] == 120.0 and record["height_cm"] == 140.2
    assert record["status"] == "ok" and record["bone_age_months"] == 131.5 and record["sds"] == 0.42
    assert record["reading"] == "within the normal range"
    assert record["model_name"] == "ensemble-2xglobal" and record["model_version"] == "0.1.0"
    assert record["image_filename"] == "left hand.PNG" and record["image_media_type"] == "image/png"
    assert record["image_path"].startswith(f"images/{record['image_sha256'][:2]}/") and record["image_path"].endswith(".png")
    assert record["decisions"] == [] and record["latest_decision"] is None
    got = store.get(record["id"])
    assert got == record
    assert got["result"]["patient"]["name"] == PATIENT_NAME  # patient fields only in result
    assert store.image_path(record["id"]).read_bytes() == b"\x89PNG fake image"
    assert store.count() == 1


def test_rejected_result_without_bone_age(store):
    record = add(store, result={"status": "rejected", "error": "blank image"}, inputs={"sex": "male"}, source="dicom")
    assert record["status"] == "rejected" and record["bone_age_months"] is None and record["sex"] == "M"
    assert record["chronological_age_months"] is None and record["height_cm"] is None


def test_list_is_newest_first_and_paged(store):
    ids = [add(store, image=bytes([i]) * 10)["id"] for i in range(5)]
    page = store.list(offset=0, limit=2)
    assert page["total"] == 5 and page["offset"] == 0 and page["limit"] == 2
    assert [item["id"] for item in page["items"]] == ids[::-1][:2]
    assert [item["id"] for item in store.list(offset=2, limit=2)["items"]] == ids[::-1][2:4]
    assert [item["id"] for item in store.list(offset=4, limit=2)["items"]] == ids[:1]
    assert store.list(offset=10)["items"] == []
    assert store.list(limit=10_000)["limit"] == 200
    item = store.list()["items"][0]
    assert "result" not in item and item["latest_decision"] is None
    with pytest.raises(InvalidInputError):
        store.list(offset=-1)


def test_decisions_are_kept_beside_the_models_result(store):
    record = add(store)
    first = store.add_decision(record["id"], "corrected", reader_bone_age_months=144, comment="carpals look older", reader="Dr A")
    assert first["decision"] == "corrected" and first["reader_bone_age_months"] == 144.0
    second = store.add_decision(record["id"], "accepted", reader="Dr B")
    got = store.get(record["id"])
    assert got["bone_age_months"] == 131.5 and got["result"] == record["result"]  # the model's value is untouched
    assert [d["id"] for d in got["decisions"]] == [first["id"], second["id"]]
    assert got["latest_decision"] == second
    assert got["decisions"][0]["comment"] == "carpals look older"
    assert store.list()["items"][0]["latest_decision"] == second


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"decision": "maybe"}, "decision must be"),
        ({"decision": "corrected"}, "needs reader_bone_age_months"),
        ({"decision": "corrected", "reader_bone_age_months": 241}, "between 0 and 240"),
        ({"decision": "corrected", "reader_bone_age_months": -1}, "between 0 and 240"),
        ({"decision": "corrected", "reader_bone_age_months": "ten"}, "must be a number"),
        ({"decision": "corrected", "reader_bone_age_months": float("nan")}, "finite"),
        ({"decision": "accepted", "reader_bone_age_months": 100}, "takes no reader_bone_age_months"),
        ({"decision": "accepted", "comment": "x" * 2001}, "too long"),
    ],
)
def test_decision_validation(store, kwargs, message):
    record = add(store)
    with pytest.raises(InvalidInputError, match=message):
        store.add_decision(record["id"], **kwargs)
    assert store.get(record["id"])["decisions"] == []


def test_comment_at_the_limit_is_accepted(store):
    record = add(store)
    assert len(store.add_decision(record["id"], "accepted", comment="x" * 2000)["comment"]) == 2000


def test_unknown_ids_raise_not_found(store):
    assert issubclass(NotFound, BoneAgeError)
    for call in (store.get, store.image_path, lambda key: store.add_decision(key, "accepted")):
        with pytest.raises(NotFound, match="no assessment"):
            call("00000000-0000-0000-0000-000000000000")


@pytest.mark.parametrize(
    "change,message",
    [
        ({"inputs": {"sex": "X"}}, "sex must be M or F"),
        ({"inputs": {"sex": "F", "height_cm": -3}}, "height_cm"),
        ({"source": "fax"}, "source must be one of"),
        ({"result": {"status": "ok"}}, "needs bone_age_months"),
        ({"result": {"status": "odd", "bone_age_months": 1}}, "status must be one of"),
        ({"result": {"bone_age_months": float("inf")}}, "finite"),
        ({"result": {"bone_age_months": 1, "x": object()}}, "cannot be stored as JSON"),
        ({"image": b""}, "image is empty"),
    ],
)
def test_assessment_validation(store, change, message):
    with pytest.raises(InvalidInputError, match=message):
        add(store, **change)
    assert store.count() == 0


def test_same_image_twice_is_stored_once(store, tmp_path):
    one = add(store, image=b"same bytes", filename="a.png")
    two = add(store, image=b"same bytes", filename="b.PNG")
    other = add(store, image=b"other bytes", filename="c.png")
    assert one["id"] != two["id"] and one["image_sha256"] == two["image_sha256"] != other["image_sha256"]
    assert one["image_path"] == two["image_path"]
    files = [p for p in (tmp_path / "data" / "images").rglob("*") if p.is_file()]
    assert len(files) == 2 and not any(p.name.startswith(".") for p in files)
    assert store.count() == 3


def test_everything_survives_a_restart(tmp_path):
    with AssessmentStore(tmp_path / "data") as store:
        ids = [add(store, image=bytes([i]) * 4)["id"] for i in range(3)]
        store.add_decision(ids[0], "corrected", reader_bone_age_months=100, comment="later")
        before = [store.get(key) for key in ids]
    with pytest.raises(RuntimeError, match="closed"):
        store.count()
    with AssessmentStore(tmp_path / "data") as reopened:
        assert reopened.count() == 3
        assert [reopened.get(key) for key in ids] == before
        assert reopened.image_path(ids[1]).read_bytes() == bytes([1]) * 4


def test_concurrent_adds_from_threads(store):
    errors, ids, lock = [], [], threading.Lock()

    def worker(n: int) -> None:
        try:
            for i in range(10):
                record = add(store, image=f"image {n}-{i % 3}".encode())
                store.add_decision(record["id"], "accepted")
                with lock:
                    ids.append(record["id"])
        except Exception as err:  # noqa: BLE001 - collected and asserted below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert store.count() == 80 and len(set(ids)) == 80
    assert store.list(limit=200)["total"] == 80
    assert all(item["latest_decision"]["decision"] == "accepted" for item in store.list(limit=200)["items"])


def test_old_database_is_upgraded_on_open(tmp_path):
    data = tmp_path / "data"
    with AssessmentStore(data) as store:
        add(store)
        with store.engine.begin() as connection:
            command.downgrade(migration_config(connection), "base")
        with store.engine.connect() as connection:
            assert "assessments" not in sa.inspect(connection).get_table_names()
    with AssessmentStore(data) as reopened:
        assert reopened.schema_revision == "0001" and reopened.count() == 0
        add(reopened)
        assert reopened.count() == 1


def test_database_from_a_newer_version_is_refused(tmp_path):
    data = tmp_path / "data"
    with AssessmentStore(data) as store, store.engine.begin() as connection:
        connection.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(DatabaseVersionError, match="9999"):
        AssessmentStore(data)


def test_database_url_selects_another_database(tmp_path):
    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    with AssessmentStore(tmp_path / "data", database_url=url) as store:
        add(store)
        assert store.database_url == url
    assert (tmp_path / "elsewhere.db").is_file() and not (tmp_path / "data" / "boneage.sqlite3").exists()


def test_no_patient_data_in_logs(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    with AssessmentStore(tmp_path / "data") as store:
        record = add(store, filename=f"{PATIENT_NAME}.png")
        store.add_decision(record["id"], "corrected", reader_bone_age_months=150, comment="secret remark", reader="Dr Who")
        with pytest.raises(InvalidInputError):
            store.add_decision(record["id"], "corrected", reader_bone_age_months=300, comment="secret remark")
    text = caplog.text
    assert record["id"] in text and record["image_sha256"] in text
    text = re.sub(r"\b[0-9a-f-]{16,}\b", "<id>", text)  # hex digits of ids and hashes may spell "150" by chance
    for private in (PATIENT_NAME, "PID-778899", "secret remark", "Dr Who", "131.5", "150"):
        assert private not in text


@pytest.mark.parametrize("url", ["postgresql+psycopg://reader:s3cret@127.0.0.1:1/none", "nonsense://x"])
def test_unusable_database_url_is_one_clear_error_without_the_password(tmp_path, url):
    from boneage.service.store import DatabaseOpenError

    with pytest.raises(DatabaseOpenError) as err:
        AssessmentStore(tmp_path, url)
    message = str(err.value)
    assert "s3cret" not in message and len(message.splitlines()) == 1
    assert message.startswith(("cannot open the assessment database", "cannot use database URL"))
