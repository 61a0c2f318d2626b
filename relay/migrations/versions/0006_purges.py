"""the purges table: who deleted a car's history, when, and what went

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 19:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: str | Sequence[str] | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('purges',
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True,
              nullable=False),
    sa.Column('vehicle_id', sa.String(length=64), nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.Column('by', sa.String(length=64), nullable=False),
    sa.Column('deleted', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['vehicle_id'], ['vehicles.id'],
                            name=op.f('fk_purges_vehicle_id_vehicles'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_purges'))
    )
    with op.batch_alter_table('purges', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_purges_vehicle_id'), ['vehicle_id'], unique=False)


def downgrade() -> None:
    op.drop_table('purges')
