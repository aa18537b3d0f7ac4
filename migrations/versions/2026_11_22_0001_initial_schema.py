"""Initial schema: catalog, batch jobs and items, conversations.

Revision ID: 0001
Revises:
Create Date: 2026-11-22 09:07:30.086872
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# CHECK lists come from the enums the code writes, so code and schema cannot drift.
from models.enums import ErrorPolicy, ItemStatus, JobStatus, ProcessingStatus, Tier, sql_in_list

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('batch_jobs',
    sa.Column('id', sa.UUID(), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('job_type', sa.String(length=50), server_default='conversation_generation', nullable=False),
    sa.Column('status', sa.String(length=20), server_default='queued', nullable=False),
    sa.Column('priority', sa.Integer(), server_default='0', nullable=False),
    sa.Column('total_items', sa.Integer(), server_default='0', nullable=False),
    sa.Column('completed_items', sa.Integer(), server_default='0', nullable=False),
    sa.Column('failed_items', sa.Integer(), server_default='0', nullable=False),
    sa.Column('successful_items', sa.Integer(), server_default='0', nullable=False),
    sa.Column('cancelled_items', sa.Integer(), server_default='0', nullable=False),
    sa.Column('tier', sa.String(length=20), nullable=False),
    sa.Column('shared_parameters', postgresql.JSONB(astext_type=sa.Text()), server_default='{}', nullable=False),
    sa.Column('concurrent_processing', sa.Integer(), server_default='3', nullable=False),
    sa.Column('error_handling', sa.String(length=20), server_default='continue', nullable=False),
    sa.Column('created_by', sa.String(length=200), nullable=False),
    sa.Column('error_message', sa.Text(), nullable=True),
    sa.Column('input_tokens', sa.Integer(), server_default='0', nullable=False),
    sa.Column('output_tokens', sa.Integer(), server_default='0', nullable=False),
    sa.Column('cost_usd', sa.Numeric(precision=12, scale=6, asdecimal=False), server_default='0', nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('completed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('estimated_time_remaining', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint(f"error_handling IN ({sql_in_list(ErrorPolicy)})", name=op.f('ck_batch_jobs_error_handling')),
    sa.CheckConstraint(f"status IN ({sql_in_list(JobStatus)})", name=op.f('ck_batch_jobs_status')),
    sa.CheckConstraint(f"tier IN ({sql_in_list(Tier)})", name=op.f('ck_batch_jobs_tier')),
    sa.CheckConstraint('concurrent_processing BETWEEN 1 AND 100', name=op.f('ck_batch_jobs_concurrent_processing')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_batch_jobs'))
    )
    op.create_index(op.f('ix_batch_jobs_status'), 'batch_jobs', ['status'], unique=False)
    op.create_table('emotional_arcs',
    sa.Column('id', sa.UUID(), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('arc_type', sa.String(length=100), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('is_active', sa.Boolean(), server_default='true', nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_emotional_arcs')),
    sa.UniqueConstraint('name', name=op.f('uq_emotional_arcs_name'))
    )
    op.create_index(op.f('ix_emotional_arcs_arc_type'), 'emotional_arcs', ['arc_type'], unique=False)
    op.create_table('personas',
    sa.Column('id', sa.UUID(), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('traits', postgresql.JSONB(astext_type=sa.Text()), server_default='{}', nullable=False),
    sa.Column('is_active', sa.Boolean(), server_default='true', nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_personas')),
    sa.UniqueConstraint('name', name=op.f('uq_personas_name'))
    )
    op.create_table('prompt_templates',
    sa.Column('id', sa.UUID(), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('tier', sa.String(length=20), nullable=False),
    sa.Column('arc_type', sa.String(length=100), nullable=True),
    sa.Column('is_active', sa.Boolean(), server_default='true', nullable=False),
    sa.Column('system_text', sa.Text(), nullable=False),
    sa.Column('template_text', sa.Text(), nullable=False),
    sa.Column('version', sa.Integer(), server_default='1', nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint(f"tier IN ({sql_in_list(Tier)})", name=op.f('ck_prompt_templates_tier')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_prompt_templates')),
    sa.UniqueConstraint('name', 'version', name='uq_prompt_templates_name_version')
    )
    op.create_table('training_topics',
    sa.Column('id', sa.UUID(), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('is_active', sa.Boolean(), server_default='true', nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_training_topics')),
    sa.UniqueConstraint('name', name=op.f('uq_training_topics_name'))
    )
    op.create_table('conversations',
    sa.Column('id', sa.UUID(), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('conversation_id', sa.UUID(), nullable=False),
    sa.Column('batch_job_id', sa.UUID(), nullable=False),
    sa.Column('created_by', sa.String(length=200), nullable=False),
    sa.Column('title', sa.Text(), nullable=False),
    sa.Column('processing_status', sa.String(length=20), server_default='generated', nullable=False),
    sa.Column('raw_storage_path', sa.Text(), nullable=False),
    sa.Column('final_storage_path', sa.Text(), nullable=False),
    sa.Column('persona_id', sa.UUID(), nullable=False),
    sa.Column('emotional_arc_id', sa.UUID(), nullable=False),
    sa.Column('training_topic_id', sa.UUID(), nullable=False),
    sa.Column('template_id', sa.UUID(), nullable=False),
    sa.Column('tier', sa.String(length=20), nullable=False),
    sa.Column('turn_count', sa.Integer(), nullable=False),
    sa.Column('generation_metadata', postgresql.JSONB(astext_type=sa.Text()), server_default='{}', nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint(f"processing_status IN ({sql_in_list(ProcessingStatus)})", name=op.f('ck_conversations_processing_status')),
    sa.ForeignKeyConstraint(['batch_job_id'], ['batch_jobs.id'], name=op.f('fk_conversations_batch_job_id_batch_jobs'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['emotional_arc_id'], ['emotional_arcs.id'], name=op.f('fk_conversations_emotional_arc_id_emotional_arcs')),
    sa.ForeignKeyConstraint(['persona_id'], ['personas.id'], name=op.f('fk_conversations_persona_id_personas')),
    sa.ForeignKeyConstraint(['template_id'], ['prompt_templates.id'], name=op.f('fk_conversations_template_id_prompt_templates')),
    sa.ForeignKeyConstraint(['training_topic_id'], ['training_topics.id'], name=op.f('fk_conversations_training_topic_id_training_topics')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_conversations')),
    sa.UniqueConstraint('conversation_id', name=op.f('uq_conversations_conversation_id'))
    )
    op.create_index(op.f('ix_conversations_batch_job_id'), 'conversations', ['batch_job_id'], unique=False)
    op.create_table('batch_items',
    sa.Column('id', sa.UUID(), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('batch_job_id', sa.UUID(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('topic', sa.String(length=200), nullable=False),
    sa.Column('tier', sa.String(length=20), nullable=False),
    sa.Column('parameters', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('status', sa.String(length=20), server_default='queued', nullable=False),
    sa.Column('progress', sa.Integer(), server_default='0', nullable=False),
    sa.Column('estimated_time', sa.Integer(), nullable=True),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('conversation_id', sa.UUID(), nullable=True),
    sa.Column('error_message', sa.Text(), nullable=True),
    sa.Column('usage', postgresql.JSONB(astext_type=sa.Text()), server_default='{}', nullable=False),
    sa.Column('processed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint(f"status IN ({sql_in_list(ItemStatus)})", name=op.f('ck_batch_items_status')),
    sa.CheckConstraint(f"tier IN ({sql_in_list(Tier)})", name=op.f('ck_batch_items_tier')),
    sa.ForeignKeyConstraint(['batch_job_id'], ['batch_jobs.id'], name=op.f('fk_batch_items_batch_job_id_batch_jobs'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['conversation_id'], ['conversations.id'], name=op.f('fk_batch_items_conversation_id_conversations'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_batch_items')),
    sa.UniqueConstraint('batch_job_id', 'position', name='uq_batch_items_batch_job_id_position')
    )


def downgrade() -> None:
    op.drop_table('batch_items')
    op.drop_index(op.f('ix_conversations_batch_job_id'), table_name='conversations')
    op.drop_table('conversations')
    op.drop_table('training_topics')
    op.drop_table('prompt_templates')
    op.drop_table('personas')
    op.drop_index(op.f('ix_emotional_arcs_arc_type'), table_name='emotional_arcs')
    op.drop_table('emotional_arcs')
    op.drop_index(op.f('ix_batch_jobs_status'), table_name='batch_jobs')
    op.drop_table('batch_jobs')
