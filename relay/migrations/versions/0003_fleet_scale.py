"""fleet scale: 64-bit row numbers, commit-ordered message numbers per vehicle, indexes for the
pages and retention, shared login limits and settings

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 16:10:00

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: str | Sequence[str] | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROW_TABLES = ('messages', 'state_history', 'command_results', 'appointments', 'fleet_reports')
INDEXES = (
    ('messages', 'ix_messages_vehicle_kind_vseq', ['vehicle_id', 'kind', 'vseq']),
    ('messages', 'ix_messages_vehicle_severity_vseq', ['vehicle_id', 'severity', 'vseq']),
    ('messages', 'ix_messages_vehicle_visibility_vseq', ['vehicle_id', 'visibility', 'vseq']),
    ('messages', 'ix_messages_received_at', ['received_at']),
    ('state_history', 'ix_state_history_ts', ['ts']),
    ('commands', 'ix_commands_vehicle_issued_at', ['vehicle_id', 'issued_at']),
    ('commands', 'ix_commands_issued_at', ['issued_at']),
    ('command_results', 'ix_command_results_received_at', ['received_at']),
    ('appointments', 'ix_appointments_received_at', ['received_at']),
    ('fleet_reports', 'ix_fleet_reports_received_at', ['received_at']),
)


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == 'postgresql'
    if postgres:  # SQLite's INTEGER PRIMARY KEY is 64-bit already
        for table in ROW_TABLES:
            op.alter_column(table, 'seq', type_=sa.BigInteger(), existing_nullable=False)
            op.execute(f'ALTER SEQUENCE {table}_seq_seq AS bigint')
    with op.batch_alter_table('vehicles') as batch:
        batch.add_column(sa.Column('msg_seq', sa.BigInteger(), nullable=False,
                                   server_default='0'))
        batch.add_column(sa.Column('history_at', sa.DateTime(), nullable=True))
    with op.batch_alter_table('messages') as batch:
        batch.add_column(sa.Column('vseq', sa.BigInteger(), nullable=True))
    # Existing messages keep their order (and a browser's Last-Event-ID stays valid).
    op.execute('UPDATE messages SET vseq = seq')
    op.execute('UPDATE vehicles SET msg_seq = COALESCE((SELECT MAX(m.vseq) FROM messages m '
               'WHERE m.vehicle_id = vehicles.id), 0)')
    with op.batch_alter_table('messages') as batch:
        batch.alter_column('vseq', existing_type=sa.BigInteger(), nullable=False)
        batch.drop_index('ix_messages_vehicle_seq')
        batch.create_unique_constraint('uq_messages_vehicle_id_vseq', ['vehicle_id', 'vseq'])
    with op.batch_alter_table('fleet_reports') as batch:
        batch.add_column(sa.Column('dedup_key', sa.String(length=64), nullable=True))
    op.execute("UPDATE fleet_reports SET dedup_key = 'seq-' || CAST(seq AS VARCHAR(20))")
    with op.batch_alter_table('fleet_reports') as batch:
        batch.alter_column('dedup_key', existing_type=sa.String(length=64), nullable=False)
        batch.create_unique_constraint('uq_fleet_reports_vehicle_id_dedup_key',
                                       ['vehicle_id', 'dedup_key'])
    for table, name, columns in INDEXES:
        op.create_index(name, table, columns)
    op.create_table('login_failures',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True,
              nullable=False),
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_login_failures'))
    )
    op.create_index('ix_login_failures_key_at', 'login_failures', ['key', 'at'])
    op.create_index('ix_login_failures_at', 'login_failures', ['at'])
    op.create_table('relay_settings',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_relay_settings'))
    )


def downgrade() -> None:
    op.drop_table('relay_settings')
    op.drop_index('ix_login_failures_at', 'login_failures')
    op.drop_index('ix_login_failures_key_at', 'login_failures')
    op.drop_table('login_failures')
    for table, name, _columns in reversed(INDEXES):
        op.drop_index(name, table)
    with op.batch_alter_table('fleet_reports') as batch:
        batch.drop_constraint('uq_fleet_reports_vehicle_id_dedup_key', type_='unique')
        batch.drop_column('dedup_key')
    with op.batch_alter_table('messages') as batch:
        batch.drop_constraint('uq_messages_vehicle_id_vseq', type_='unique')
        batch.create_index('ix_messages_vehicle_seq', ['vehicle_id', 'seq'])
        batch.drop_column('vseq')
    with op.batch_alter_table('vehicles') as batch:
        batch.drop_column('history_at')
        batch.drop_column('msg_seq')
    if op.get_bind().dialect.name == 'postgresql':
        for table in ROW_TABLES:
            op.execute(f'ALTER SEQUENCE {table}_seq_seq AS integer')
            op.alter_column(table, 'seq', type_=sa.Integer(), existing_nullable=False)
