# Segment conditions on profile, consent, tags and metrics read covering indexes instead of the tables:
# the city of live customers, (channel, status) → customer for consents, (tag, customer) for tags, and the
# metrics' stage and RFM indexes carry the customer id, so the joins of a typical rule scan narrow
# index entries instead of wide rows (see BENCHMARKS.md, segment counts).
#
# Writes: the foreign keys' single-column indexes on consent (customer) and customer tag (customer, tag)
# go; each is redundant with a composite index with the same leading column. Net: one more index per
# customer written (the partial city index), none more per consent or tag.

import django.db.models.deletion
from django.db import migrations, models

from crm.migration_ops import (
    AddIndexConcurrentlyOnPostgres,
    RemoveIndexConcurrentlyOnPostgres,
    drop_foreign_key_index,
)


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("crm", "0009_fewer_write_indexes"),
    ]

    operations = [
        AddIndexConcurrentlyOnPostgres(
            model_name="customer",
            index=models.Index(
                condition=models.Q(("erased_at__isnull", True)),
                fields=["city"],
                include=("id",),
                name="crm_customer_city_live_idx",
            ),
        ),
        AddIndexConcurrentlyOnPostgres(
            model_name="consent",
            index=models.Index(
                fields=["channel", "status"], include=("customer",), name="crm_consent_chan_status_idx"
            ),
        ),
        drop_foreign_key_index(
            migrations.AlterField(
                model_name="consent",
                name="customer",
                field=models.ForeignKey(
                    db_index=False,
                    on_delete=django.db.models.deletion.CASCADE,
                    related_name="consents",
                    to="crm.customer",
                ),
            ),
            index="crm_consent_customer_id_6c648fd1",
            table="crm_consent",
            column="customer_id",
        ),
        AddIndexConcurrentlyOnPostgres(
            model_name="customertag",
            index=models.Index(fields=["tag", "customer"], name="crm_customertag_tag_cust_idx"),
        ),
        drop_foreign_key_index(
            migrations.AlterField(
                model_name="customertag",
                name="customer",
                field=models.ForeignKey(
                    db_index=False,
                    on_delete=django.db.models.deletion.CASCADE,
                    related_name="customer_tags",
                    to="crm.customer",
                ),
            ),
            index="crm_customertag_customer_id_b2f4dac1",
            table="crm_customertag",
            column="customer_id",
        ),
        drop_foreign_key_index(
            migrations.AlterField(
                model_name="customertag",
                name="tag",
                field=models.ForeignKey(
                    db_index=False,
                    on_delete=django.db.models.deletion.CASCADE,
                    related_name="customer_tags",
                    to="crm.tag",
                ),
            ),
            index="crm_customertag_tag_id_3b81c77a",
            table="crm_customertag",
            column="tag_id",
        ),
        AddIndexConcurrentlyOnPostgres(
            model_name="customermetrics",
            index=models.Index(
                fields=["lifecycle_stage"], include=("customer",), name="crm_metrics_stage_cov_idx"
            ),
        ),
        RemoveIndexConcurrentlyOnPostgres(model_name="customermetrics", name="crm_metrics_stage_idx"),
        AddIndexConcurrentlyOnPostgres(
            model_name="customermetrics",
            index=models.Index(fields=["rfm_segment"], include=("customer",), name="crm_metrics_rfm_cov_idx"),
        ),
        RemoveIndexConcurrentlyOnPostgres(model_name="customermetrics", name="crm_metrics_rfm_idx"),
    ]
