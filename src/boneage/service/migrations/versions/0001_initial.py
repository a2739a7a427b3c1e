"""Initial schema: assessments and readers' decisions.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "assessments",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("image_sha256", sa.String(64), nullable=False),
        sa.Column("image_path", sa.String(255), nullable=False),
        sa.Column("image_filename", sa.String(255), nullable=False),
        sa.Column("image_media_type", sa.String(100), nullable=True),
        sa.Column("sex", sa.String(1), nullable=False),
        sa.Column("chronological_age_months", sa.Float(), nullable=True),
        sa.Column("height_cm", sa.Float(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("bone_age_months", sa.Float(), nullable=True),
        sa.Column("sds", sa.Float(), nullable=True),
        sa.Column("reading", sa.Text(), nullable=True),
        sa.Column("result_json", sa.Text(), nullable=False),
        sa.Column("model_name", sa.String(200), nullable=False),
        sa.Column("model_version", sa.String(200), nullable=False),
        sa.CheckConstraint("status IN ('ok', 'rejected')", name="ck_assessments_status"),
        sa.CheckConstraint("source IN ('api', 'ui', 'dicom', 'cli')", name="ck_assessments_source"),
        sa.CheckConstraint("sex IN ('M', 'F')", name="ck_assessments_sex"),
    )
    op.create_index("ix_assessments_created_at", "assessments", ["created_at"])
    op.create_index("ix_assessments_image_sha256", "assessments", ["image_sha256"])
    op.create_table(
        "reader_decisions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "assessment_id",
            sa.String(36),
            sa.ForeignKey("assessments.id", name="fk_reader_decisions_assessment_id"),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("reader_bone_age_months", sa.Float(), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("reader", sa.String(200), nullable=True),
        sa.CheckConstraint("decision IN ('accepted', 'corrected')", name="ck_reader_decisions_decision"),
        sa.CheckConstraint(
            "decision = 'accepted' OR reader_bone_age_months IS NOT NULL",
            name="ck_reader_decisions_corrected_has_bone_age",
        ),
    )
    op.create_index("ix_reader_decisions_assessment_id", "reader_decisions", ["assessment_id"])


def downgrade() -> None:
    op.drop_index("ix_reader_decisions_assessment_id", table_name="reader_decisions")
    op.drop_table("reader_decisions")
    op.drop_index("ix_assessments_image_sha256", table_name="assessments")
    op.drop_index("ix_assessments_created_at", table_name="assessments")
    op.drop_table("assessments")
