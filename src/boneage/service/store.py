"""Persistence of assessments and readers' decisions: the store behind the web service and the DICOM node.

One :class:`AssessmentStore` per process holds one SQLAlchemy engine and opens a short session per
call, so it can be shared by the threads of a web server. By default the database is SQLite in WAL
mode at ``<data_dir>/boneage.sqlite3``; any SQLAlchemy URL (``postgresql+psycopg://user@host/db``)
selects another server. The schema is created and upgraded by the Alembic migrations shipped in
``boneage/service/migrations`` every time a store opens.

Each uploaded image is kept once, content-addressed, at ``<data_dir>/images/<sha256[:2]>/<sha256><suffix>``.
A reader's decision (accept, or correct with their own bone age and a comment) is a row of its own:
the model's result is never changed, every decision is kept, and the latest one is shown with the
assessment.

Nothing here logs patient data: log lines carry assessment ids, decision ids and image hashes only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import logging
import math
import os
import re
import threading
import uuid
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Self

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from ..errors import BoneAgeError, InvalidInputError
from ..io import normalize_sex
from ..utils import atomic_write

__all__ = [
    "DATABASE_FILENAME",
    "DATABASE_URL_ENV",
    "DatabaseOpenError",
    "DECISIONS",
    "IMAGES_DIRNAME",
    "MAX_COMMENT_CHARS",
    "MAX_PAGE_SIZE",
    "READER_BONE_AGE_RANGE_MONTHS",
    "SOURCES",
    "AssessmentStore",
    "DatabaseVersionError",
    "NotFound",
    "migration_config",
]

log = logging.getLogger("boneage.service")

DATABASE_FILENAME = "boneage.sqlite3"
IMAGES_DIRNAME = "images"
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SOURCES = ("api", "ui", "dicom", "cli")
STATUSES = ("ok", "rejected")
DECISIONS = ("accepted", "corrected")
MAX_PAGE_SIZE = 200
DATABASE_URL_ENV = "BONEAGE_DATABASE_URL"  # read by `boneage serve` and `boneage dicom-node`
DEFAULT_PAGE_SIZE = 50
MAX_COMMENT_CHARS = 2000
MAX_NAME_CHARS = 200
READER_BONE_AGE_RANGE_MONTHS = (0.0, 240.0)
SQLITE_BUSY_TIMEOUT_MS = 30_000

_MEDIA_SUFFIXES = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/jpg": ".jpg",
    "image/tiff": ".tif",
    "application/dicom": ".dcm",
}
_SUFFIX_RE = re.compile(r"^\.[a-z0-9]{1,10}$")


class NotFound(BoneAgeError):
    """No assessment (or no stored image) with the given id."""


class DatabaseOpenError(BoneAgeError):
    """The database cannot be reached or used (bad URL, server down, wrong credentials)."""


def _first_line(err: BaseException) -> str:
    text = str(getattr(err, "orig", None) or err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _hidden(url) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - unparseable: say nothing of it that could hold a password
        return "(unparseable)"


class DatabaseVersionError(BoneAgeError):
    """The database was written by a newer boneage (its schema revision is unknown here)."""


# --------------------------------------------------------------------------------------------------
# Schema (the migrations in migrations/versions are the source of truth; these mirror them)


class _UTCDateTime(sa.types.TypeDecorator):
    """A timezone-aware UTC datetime on every backend (SQLite stores naive UTC text)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    pass


class Assessment(Base):
    __tablename__ = "assessments"
    __table_args__ = (
        sa.CheckConstraint("status IN ('ok', 'rejected')", name="ck_assessments_status"),
        sa.CheckConstraint("source IN ('api', 'ui', 'dicom', 'cli')", name="ck_assessments_source"),
        sa.CheckConstraint("sex IN ('M', 'F')", name="ck_assessments_sex"),
        sa.Index("ix_assessments_created_at", "created_at"),
        sa.Index("ix_assessments_image_sha256", "image_sha256"),
    )

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(_UTCDateTime(), nullable=False)
    source: Mapped[str] = mapped_column(sa.String(16), nullable=False)
    image_sha256: Mapped[str] = mapped_column(sa.String(64), nullable=False)
    image_path: Mapped[str] = mapped_column(sa.String(255), nullable=False)
    image_filename: Mapped[str] = mapped_column(sa.String(255), nullable=False)
    image_media_type: Mapped[str | None] = mapped_column(sa.String(100), nullable=True)
    sex: Mapped[str] = mapped_column(sa.String(1), nullable=False)
    chronological_age_months: Mapped[float | None] = mapped_column(sa.Float(), nullable=True)
    height_cm: Mapped[float | None] = mapped_column(sa.Float(), nullable=True)
    status: Mapped[str] = mapped_column(sa.String(16), nullable=False)
    bone_age_months: Mapped[float | None] = mapped_column(sa.Float(), nullable=True)
    sds: Mapped[float | None] = mapped_column(sa.Float(), nullable=True)
    reading: Mapped[str | None] = mapped_column(sa.Text(), nullable=True)
    result_json: Mapped[str] = mapped_column(sa.Text(), nullable=False)
    model_name: Mapped[str] = mapped_column(sa.String(200), nullable=False)
    model_version: Mapped[str] = mapped_column(sa.String(200), nullable=False)


class ReaderDecision(Base):
    __tablename__ = "reader_decisions"
    __table_args__ = (
        sa.CheckConstraint("decision IN ('accepted', 'corrected')", name="ck_reader_decisions_decision"),
        sa.CheckConstraint(
            "decision = 'accepted' OR reader_bone_age_months IS NOT NULL",
            name="ck_reader_decisions_corrected_has_bone_age",
        ),
        sa.Index("ix_reader_decisions_assessment_id", "assessment_id"),
    )

    id: Mapped[int] = mapped_column(sa.Integer(), primary_key=True, autoincrement=True)
    assessment_id: Mapped[str] = mapped_column(
        sa.String(36), sa.ForeignKey("assessments.id", name="fk_reader_decisions_assessment_id"), nullable=False
    )
    created_at: Mapped[dt.datetime] = mapped_column(_UTCDateTime(), nullable=False)
    decision: Mapped[str] = mapped_column(sa.String(16), nullable=False)
    reader_bone_age_months: Mapped[float | None] = mapped_column(sa.Float(), nullable=True)
    comment: Mapped[str | None] = mapped_column(sa.Text(), nullable=True)
    reader: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)


# --------------------------------------------------------------------------------------------------
# Engine and migrations


def _sqlite_pragmas(dbapi_connection, connection_record) -> None:
    """WAL, foreign keys and a busy timeout on every new SQLite connection."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys = ON")
        mode = cursor.execute("PRAGMA journal_mode").fetchone()[0]
        if str(mode).lower() != "wal":
            cursor.execute("PRAGMA journal_mode = WAL")
    finally:
        cursor.close()


def _create_engine(url: str | URL) -> Engine:
    # hide_parameters keeps bound values (patient data) out of logs and exception messages
    engine = sa.create_engine(url, hide_parameters=True, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def migration_config(connection: Connection | None = None, url: str | URL | None = None):
    """An Alembic ``Config`` for the shipped migrations, built in code (no ``alembic.ini``).

    Pass an open ``connection`` to run commands on it, or a ``url`` (e.g. for ``--sql`` output or
    ``alembic revision``). ``alembic.command.upgrade(migration_config(conn), "head")`` is what a
    store does on open.
    """
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if url is not None:
        text = url.render_as_string(hide_password=False) if isinstance(url, URL) else str(url)
        config.set_main_option("sqlalchemy.url", text.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _upgrade(engine: Engine) -> str:
    """Bring the schema to the newest revision; return it."""
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(migration_config())
    head = script.get_current_head()
    known = {rev.revision for rev in script.walk_revisions()}

    def current() -> str | None:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    revision = current()
    if revision is not None and revision not in known:
        raise DatabaseVersionError(
            f"the database is at schema revision {revision}, which this boneage version does not know; "
            "open it with the newer boneage that wrote it"
        )
    if revision == head:
        return head
    try:
        with engine.begin() as connection:
            command.upgrade(migration_config(connection), "head")
    except Exception:
        # another process opening the same database may have migrated it meanwhile
        if current() != head:
            raise
    log.info("database schema upgraded from %s to %s", revision or "empty", head)
    return head


# --------------------------------------------------------------------------------------------------
# Validation and conversion


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _optional_number(value, name: str, low: float | None = None, high: float | None = None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidInputError(f"{name} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise InvalidInputError(f"{name} must be a finite number, got {value!r}")
    if (low is not None and number < low) or (high is not None and number > high):
        lo = "" if low is None else f"{low:g}"
        hi = "" if high is None else f"{high:g}"
        raise InvalidInputError(f"{name} must be between {lo} and {hi}, got {number:g}")
    return number


def _optional_text(value, name: str, max_chars: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInputError(f"{name} must be text, got {type(value).__name__}")
    if len(value) > max_chars:
        raise InvalidInputError(f"{name} is too long ({len(value)} characters; at most {max_chars})")
    return value if value.strip() else None


def _required_text(value, name: str, max_chars: int = MAX_NAME_CHARS) -> str:
    text = _optional_text(value, name, max_chars)
    if text is None:
        raise InvalidInputError(f"{name} is required")
    return text.strip()


def _json_default(value):
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return value.item()
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy arrays
        return value.tolist()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (Path, PurePosixPath, PureWindowsPath)):
        return str(value)
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _result_to_json(result: dict) -> str:
    if not isinstance(result, dict):
        raise InvalidInputError(f"result must be a dict, got {type(result).__name__}")
    try:
        return json.dumps(result, default=_json_default, allow_nan=False, ensure_ascii=False, sort_keys=True)
    except (TypeError, ValueError) as err:
        raise InvalidInputError(f"result cannot be stored as JSON: {err}") from None


def _base_filename(filename) -> str:
    """The original file's name without any directory part (client paths may use / or \\)."""
    name = PureWindowsPath(str(filename or "")).name.strip()
    name = "".join(ch for ch in name if ch.isprintable())
    return name[-255:] if name else "upload"


def _image_suffix(filename: str, media_type: str | None) -> str:
    suffix = PurePosixPath(filename).suffix.lower()
    if _SUFFIX_RE.match(suffix):
        return suffix
    return _MEDIA_SUFFIXES.get((media_type or "").split(";")[0].strip().lower(), "")


# --------------------------------------------------------------------------------------------------
# The store


class AssessmentStore:
    """Every assessment (image, inputs, outputs, model) and every reader's decision on it.

    ``data_dir`` holds the SQLite database (unless ``database_url`` names another one) and the
    uploaded images. Thread-safe: one engine, one short session per call. Use as a context manager
    or call :meth:`close`.
    """

    def __init__(self, data_dir: str | Path, database_url: str | URL | None = None):
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.images_dir = self.data_dir / IMAGES_DIRNAME
        self.images_dir.mkdir(parents=True, exist_ok=True)
        if database_url is None:
            database_url = URL.create("sqlite", database=str(self.data_dir / DATABASE_FILENAME))
        try:
            self._engine = _create_engine(database_url)
        except (SQLAlchemyError, ValueError, ImportError) as err:  # a malformed URL, a missing driver
            raise DatabaseOpenError(f"cannot use database URL {_hidden(database_url)}: {_first_line(err)}") from None
        self._closed = False
        self._lock = threading.Lock()
        try:
            self.schema_revision = _upgrade(self._engine)
        except SQLAlchemyError as err:  # server unreachable, wrong credentials, no such database
            self._engine.dispose()
            raise DatabaseOpenError(
                f"cannot open the assessment database {self._engine.url.render_as_string(hide_password=True)}: "
                f"{_first_line(err)}") from None
        except BaseException:
            self._engine.dispose()
            raise
        log.info(
            "assessment store open: %s (schema %s, images in %s)",
            self._engine.url.render_as_string(hide_password=True),
            self.schema_revision,
            self.images_dir,
        )

    # -- lifecycle

    @property
    def engine(self) -> Engine:
        self._check_open()
        return self._engine

    @property
    def database_url(self) -> str:
        """The database URL with any password hidden."""
        return self._engine.url.render_as_string(hide_password=True)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._engine.dispose()
                log.info("assessment store closed")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the assessment store is closed")

    @contextlib.contextmanager
    def _session(self):
        self._check_open()
        with Session(self._engine, expire_on_commit=False) as session:
            yield session

    # -- images

    def _store_image(self, image_bytes: bytes, filename: str, media_type: str | None,
                     sha256: str | None = None) -> tuple[str, str]:
        """Write the image once under its SHA-256 (computed unless the caller, who read the bytes, gives
        it); return (sha256, path relative to data_dir)."""
        sha256 = sha256 or hashlib.sha256(image_bytes).hexdigest()
        folder = self.images_dir / sha256[:2]
        folder.mkdir(parents=True, exist_ok=True)
        for existing in sorted(folder.glob(f"{sha256}*")):
            same_name = existing.name == sha256 or existing.name.startswith(sha256 + ".")
            if same_name and existing.is_file() and existing.stat().st_size == len(image_bytes):
                return sha256, existing.relative_to(self.data_dir).as_posix()
        target = atomic_write(folder / f"{sha256}{_image_suffix(filename, media_type)}", image_bytes)
        with contextlib.suppress(OSError, AttributeError):  # make the rename durable (POSIX only)
            fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        log.debug("image %s stored", sha256)
        return sha256, target.relative_to(self.data_dir).as_posix()

    # -- writing

    def add_assessment(
        self,
        image_bytes: bytes,
        filename: str,
        media_type: str | None,
        inputs: dict,
        result: dict,
        model_name: str,
        model_version: str,
        source: str,
        *,
        image_sha256: str | None = None,
    ) -> dict:
        """Store one assessment with a copy of its input image; return the record (see :meth:`get`).

        ``inputs``: ``sex`` (M/F), ``chronological_age_months`` and ``height_cm`` (optional).
        ``image_sha256``: the hash of ``image_bytes`` when the caller computed it already (it names the
        stored file).
        ``result``: the full assessment dict, kept as JSON; its ``status`` ('ok'/'rejected', default
        from whether ``bone_age_months`` is set), ``bone_age_months``, ``sds`` and ``reading`` are
        also stored as columns. Patient fields live only inside ``result``.
        """
        if not isinstance(image_bytes, (bytes, bytearray, memoryview)) or len(image_bytes) == 0:
            raise InvalidInputError("the image is empty or not bytes")
        image_bytes = bytes(image_bytes)
        if not isinstance(inputs, dict):
            raise InvalidInputError(f"inputs must be a dict, got {type(inputs).__name__}")
        source_text = str(source).strip().lower() if source is not None else ""
        if source_text not in SOURCES:
            raise InvalidInputError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
        sex = normalize_sex(inputs.get("sex"))
        chronological_age = _optional_number(inputs.get("chronological_age_months"), "chronological_age_months", 0.0)
        height = _optional_number(inputs.get("height_cm"), "height_cm", 0.0)
        if not isinstance(result, dict):
            raise InvalidInputError(f"result must be a dict, got {type(result).__name__}")
        bone_age = _optional_number(result.get("bone_age_months"), "bone_age_months")
        sds = _optional_number(result.get("sds"), "sds")
        reading = result.get("reading")
        reading = reading if isinstance(reading, str) and reading.strip() else None
        status = result.get("status")
        status = ("ok" if bone_age is not None else "rejected") if status is None else str(status).strip().lower()
        if status not in STATUSES:
            raise InvalidInputError(f"result status must be one of {', '.join(STATUSES)}, got {result.get('status')!r}")
        if status == "ok" and bone_age is None:
            raise InvalidInputError("a result with status 'ok' needs bone_age_months")
        result_json = _result_to_json(result)
        model_name = _required_text(model_name, "model_name")
        model_version = _required_text(model_version, "model_version")
        media_type = _optional_text(media_type, "media_type", 100)
        original_name = _base_filename(filename)

        if image_sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", str(image_sha256)):
            raise InvalidInputError(f"image_sha256 must be 64 lower-case hex digits, got {image_sha256!r}")
        sha256, relative_path = self._store_image(image_bytes, original_name, media_type, image_sha256)
        row = Assessment(
            id=str(uuid.uuid4()),
            created_at=_utcnow(),
            source=source_text,
            image_sha256=sha256,
            image_path=relative_path,
            image_filename=original_name,
            image_media_type=media_type.strip() if media_type else None,
            sex=sex,
            chronological_age_months=chronological_age,
            height_cm=height,
            status=status,
            bone_age_months=bone_age,
            sds=sds,
            reading=reading,
            result_json=result_json,
            model_name=model_name,
            model_version=model_version,
        )
        with self._session() as session:
            session.add(row)
            session.commit()
        log.info("assessment %s stored (image %s, source %s, status %s)", row.id, sha256, source_text, status)
        return self._record(row, [], include_result=True)

    def add_decision(
        self,
        assessment_id: str,
        decision: str,
        reader_bone_age_months: float | None = None,
        comment: str | None = None,
        reader: str | None = None,
    ) -> dict:
        """Record a reader's decision beside the model's result (which stays as it was).

        ``decision`` is 'accepted' (no bone age) or 'corrected' (with ``reader_bone_age_months``,
        0-240). ``comment`` up to 2000 characters; ``reader`` optional name.
        """
        decision_text = decision.strip().lower() if isinstance(decision, str) else ""
        if decision_text not in DECISIONS:
            raise InvalidInputError(f"decision must be 'accepted' or 'corrected', got {decision!r}")
        low, high = READER_BONE_AGE_RANGE_MONTHS
        bone_age = _optional_number(reader_bone_age_months, "reader_bone_age_months", low, high)
        if decision_text == "corrected" and bone_age is None:
            raise InvalidInputError("a corrected decision needs reader_bone_age_months (0-240 months)")
        if decision_text == "accepted" and bone_age is not None:
            raise InvalidInputError("an accepted decision takes no reader_bone_age_months; use 'corrected' to enter one")
        comment = _optional_text(comment, "comment", MAX_COMMENT_CHARS)
        reader = _optional_text(reader, "reader", MAX_NAME_CHARS)
        reader = reader.strip() if reader else None
        key = self._key(assessment_id)

        row = ReaderDecision(
            assessment_id=key,
            created_at=_utcnow(),
            decision=decision_text,
            reader_bone_age_months=bone_age,
            comment=comment,
            reader=reader,
        )
        # insert without reading first (the foreign key rejects an unknown id), so concurrent
        # writers never upgrade a read transaction to a write one
        with self._session() as session:
            session.add(row)
            try:
                session.commit()
            except IntegrityError:
                session.rollback()
                if session.get(Assessment, key) is None:
                    raise NotFound(f"no assessment with id {key}") from None
                raise
        log.info("decision %s (%s) recorded for assessment %s", row.id, decision_text, key)
        return self._decision(row)

    # -- reading

    @staticmethod
    def _key(assessment_id) -> str:
        key = str(assessment_id).strip() if assessment_id is not None else ""
        if not key or len(key) > 64:
            raise NotFound(f"no assessment with id {key[:64]!r}")
        return key

    def get(self, assessment_id: str) -> dict:
        """The assessment with all its decisions (oldest first) and the latest one; ``NotFound`` if absent."""
        key = self._key(assessment_id)
        with self._session() as session:
            row = session.get(Assessment, key)
            if row is None:
                raise NotFound(f"no assessment with id {key}")
            decisions = session.scalars(
                sa.select(ReaderDecision)
                .where(ReaderDecision.assessment_id == key)
                .order_by(ReaderDecision.created_at, ReaderDecision.id)
            ).all()
        return self._record(row, decisions, include_result=True)

    def list(self, offset: int = 0, limit: int = DEFAULT_PAGE_SIZE) -> dict:
        """A page of assessments, newest first: ``{items, total, offset, limit}`` (limit at most 200).

        Items carry the columns and ``latest_decision`` but not ``result`` or ``decisions`` (use :meth:`get`).
        """
        try:
            offset, limit = int(offset), int(limit)
        except (TypeError, ValueError):
            raise InvalidInputError(f"offset and limit must be integers, got {offset!r} and {limit!r}") from None
        if offset < 0 or limit < 0:
            raise InvalidInputError(f"offset and limit must not be negative, got {offset} and {limit}")
        limit = min(limit, MAX_PAGE_SIZE)
        with self._session() as session:
            total = session.scalar(sa.select(sa.func.count()).select_from(Assessment)) or 0
            rows = session.scalars(
                sa.select(Assessment)
                .order_by(Assessment.created_at.desc(), Assessment.id.desc())
                .offset(offset)
                .limit(limit)
            ).all()
            latest: dict[str, ReaderDecision] = {}
            if rows:
                for decision in session.scalars(
                    sa.select(ReaderDecision)
                    .where(ReaderDecision.assessment_id.in_([row.id for row in rows]))
                    .order_by(ReaderDecision.created_at, ReaderDecision.id)
                ):
                    latest[decision.assessment_id] = decision
        items = []
        for row in rows:
            record = self._record(row, [], include_result=False)
            del record["decisions"]
            record["latest_decision"] = self._decision(latest[row.id]) if row.id in latest else None
            items.append(record)
        return {"items": items, "total": int(total), "offset": offset, "limit": limit}

    def count(self) -> int:
        """How many assessments are stored."""
        with self._session() as session:
            return int(session.scalar(sa.select(sa.func.count()).select_from(Assessment)) or 0)

    def image_path(self, assessment_id: str) -> Path:
        """The absolute path of the stored input image of an assessment."""
        key = self._key(assessment_id)
        with self._session() as session:
            relative = session.scalar(sa.select(Assessment.image_path).where(Assessment.id == key))
        if relative is None:
            raise NotFound(f"no assessment with id {key}")
        path = self.data_dir / relative
        if not path.is_file():
            raise NotFound(f"the stored image of assessment {key} is missing from {self.images_dir}")
        return path

    # -- conversion

    @staticmethod
    def _decision(row: ReaderDecision) -> dict:
        return {
            "id": row.id,
            "assessment_id": row.assessment_id,
            "created_at": _iso(row.created_at),
            "decision": row.decision,
            "reader_bone_age_months": row.reader_bone_age_months,
            "comment": row.comment,
            "reader": row.reader,
        }

    def _record(self, row: Assessment, decisions, include_result: bool) -> dict:
        record = {
            "id": row.id,
            "created_at": _iso(row.created_at),
            "source": row.source,
            "image_sha256": row.image_sha256,
            "image_path": row.image_path,
            "image_filename": row.image_filename,
            "image_media_type": row.image_media_type,
            "sex": row.sex,
            "chronological_age_months": row.chronological_age_months,
            "height_cm": row.height_cm,
            "status": row.status,
            "bone_age_months": row.bone_age_months,
            "sds": row.sds,
            "reading": row.reading,
            "model_name": row.model_name,
            "model_version": row.model_version,
        }
        if include_result:
            record["result"] = json.loads(row.result_json)
        record["decisions"] = [self._decision(decision) for decision in decisions]
        record["latest_decision"] = record["decisions"][-1] if record["decisions"] else None
        return record
