"""the agents' health document on each vehicle

Revision ID: 0005
Revises: 0002
Create Date: 2026-12-02 10:00:00

Numbered after issue 16's 0003/0004 (PostgreSQL, retention), which are developed at the same
time: when those land, down_revision becomes the last of them.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0005'
down_revision: str | Sequence[str] | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('vehicles', schema=None) as batch_op:
        batch_op.add_column(sa.Column('health', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('health_at', sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('vehicles', schema=None) as batch_op:
        batch_op.drop_column('health_at')
        batch_op.drop_column('health')
