"""Labels (verbose_name) for the fields that had none, so the admin shows them translated. Django emits
no SQL for a verbose_name change: every operation here is a no-op on the database."""

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("crm", "0012_field_verbose_names"),
        ("loyalty", "0004_expiry_without_fk_check"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AlterField(
            model_name="bulkadjustmentline",
            name="batch",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.CASCADE,
                related_name="lines",
                to="loyalty.bulkadjustmentbatch",
                verbose_name="bulk adjustment",
            ),
        ),
        migrations.AlterField(
            model_name="bulkadjustmentline",
            name="customer",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to="crm.customer",
                verbose_name="customer",
            ),
        ),
        migrations.AlterField(
            model_name="bulkadjustmentline",
            name="entry",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to="loyalty.ledgerentry",
                verbose_name="ledger entry",
            ),
        ),
        migrations.AlterField(
            model_name="coupon",
            name="batch",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="coupons",
                to="loyalty.couponbatch",
                verbose_name="coupon batch",
            ),
        ),
        migrations.AlterField(
            model_name="coupon",
            name="customer",
            field=models.ForeignKey(
                blank=True,
                help_text="The member it was issued to; empty for codes handed out in bulk.",
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="coupons",
                to="crm.customer",
                verbose_name="customer",
            ),
        ),
        migrations.AlterField(
            model_name="coupon",
            name="programme",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.PROTECT,
                related_name="coupons",
                to="loyalty.couponprogramme",
                verbose_name="coupon programme",
            ),
        ),
        migrations.AlterField(
            model_name="couponbatch",
            name="created_by",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
                verbose_name="created by",
            ),
        ),
        migrations.AlterField(
            model_name="couponbatch",
            name="programme",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.PROTECT,
                related_name="batches",
                to="loyalty.couponprogramme",
                verbose_name="coupon programme",
            ),
        ),
        migrations.AlterField(
            model_name="couponprogramme",
            name="created_by",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
                verbose_name="created by",
            ),
        ),
        migrations.AlterField(
            model_name="couponredemption",
            name="api_key",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to="crm.apikey",
                verbose_name="API key",
            ),
        ),
        migrations.AlterField(
            model_name="couponredemption",
            name="coupon",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.PROTECT,
                related_name="redemptions",
                to="loyalty.coupon",
                verbose_name="coupon",
            ),
        ),
        migrations.AlterField(
            model_name="couponredemption",
            name="customer",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="coupon_redemptions",
                to="crm.customer",
                verbose_name="customer",
            ),
        ),
        migrations.AlterField(
            model_name="ledgerentry",
            name="account",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="entries",
                to="loyalty.loyaltyaccount",
                verbose_name="loyalty account",
            ),
        ),
        migrations.AlterField(
            model_name="ledgerentry",
            name="created_by",
            field=models.ForeignKey(
                blank=True,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
                verbose_name="created by",
            ),
        ),
        migrations.AlterField(
            model_name="ledgerentry",
            name="payload_hash",
            field=models.CharField(editable=False, max_length=64, verbose_name="payload hash"),
        ),
        migrations.AlterField(
            model_name="lotconsumption",
            name="entry",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="consumptions",
                to="loyalty.ledgerentry",
                verbose_name="ledger entry",
            ),
        ),
        migrations.AlterField(
            model_name="lotconsumption",
            name="lot",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.PROTECT,
                related_name="consumptions",
                to="loyalty.pointlot",
                verbose_name="lot",
            ),
        ),
        migrations.AlterField(
            model_name="loyaltycursor",
            name="last_event_id",
            field=models.BigIntegerField(default=0, verbose_name="last event id"),
        ),
        migrations.AlterField(
            model_name="loyaltycursor",
            name="name",
            field=models.CharField(max_length=64, primary_key=True, serialize=False, verbose_name="name"),
        ),
        migrations.AlterField(
            model_name="loyaltycursor",
            name="updated_at",
            field=models.DateTimeField(default=django.utils.timezone.now, verbose_name="updated at"),
        ),
        migrations.AlterField(
            model_name="manualadjustment",
            name="account",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.PROTECT,
                related_name="adjustments",
                to="loyalty.loyaltyaccount",
                verbose_name="loyalty account",
            ),
        ),
        migrations.AlterField(
            model_name="manualadjustment",
            name="created_by",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
                verbose_name="created by",
            ),
        ),
        migrations.AlterField(
            model_name="manualadjustment",
            name="entry",
            field=models.OneToOneField(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to="loyalty.ledgerentry",
                verbose_name="ledger entry",
            ),
        ),
        migrations.AlterField(
            model_name="memberapitoken",
            name="customer",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.CASCADE,
                related_name="member_api_tokens",
                to="crm.customer",
                verbose_name="customer",
            ),
        ),
        migrations.AlterField(
            model_name="memberapitoken",
            name="key_hash",
            field=models.CharField(editable=False, max_length=64, verbose_name="key hash"),
        ),
        migrations.AlterField(
            model_name="memberapitoken",
            name="prefix",
            field=models.CharField(editable=False, max_length=16, unique=True, verbose_name="prefix"),
        ),
        migrations.AlterField(
            model_name="memberlogin",
            name="customer",
            field=models.OneToOneField(
                on_delete=django.db.models.deletion.CASCADE,
                related_name="member_login",
                to="crm.customer",
                verbose_name="customer",
            ),
        ),
        migrations.AlterField(
            model_name="membermagiclinkuse",
            name="nonce",
            field=models.CharField(max_length=32, primary_key=True, serialize=False, verbose_name="nonce"),
        ),
        migrations.AlterField(
            model_name="membermagiclinkuse",
            name="used_at",
            field=models.DateTimeField(default=django.utils.timezone.now, verbose_name="used at"),
        ),
        migrations.AlterField(
            model_name="owedpoints",
            name="account",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.PROTECT,
                related_name="debts",
                to="loyalty.loyaltyaccount",
                verbose_name="loyalty account",
            ),
        ),
        migrations.AlterField(
            model_name="owedpoints",
            name="entry",
            field=models.OneToOneField(
                on_delete=django.db.models.deletion.PROTECT,
                related_name="debt",
                to="loyalty.ledgerentry",
                verbose_name="ledger entry",
            ),
        ),
        migrations.AlterField(
            model_name="pointlot",
            name="account",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.PROTECT,
                related_name="lots",
                to="loyalty.loyaltyaccount",
                verbose_name="loyalty account",
            ),
        ),
        migrations.AlterField(
            model_name="pointlot",
            name="earn_entry",
            field=models.OneToOneField(
                on_delete=django.db.models.deletion.PROTECT,
                related_name="earned_lot",
                to="loyalty.ledgerentry",
                verbose_name="earning entry",
            ),
        ),
        migrations.AlterField(
            model_name="pointlot",
            name="expire_entry",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.DO_NOTHING,
                related_name="expired_lots",
                to="loyalty.ledgerentry",
                verbose_name="expiry entry",
            ),
        ),
        migrations.AlterField(
            model_name="pointlot",
            name="order_line",
            field=models.ForeignKey(
                blank=True,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to="crm.orderline",
                verbose_name="order line",
            ),
        ),
        migrations.AlterField(
            model_name="referral",
            name="referee",
            field=models.OneToOneField(
                on_delete=django.db.models.deletion.PROTECT,
                related_name="referred_by",
                to="crm.customer",
                verbose_name="referee",
            ),
        ),
        migrations.AlterField(
            model_name="referral",
            name="referrer",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.PROTECT,
                related_name="referrals_made",
                to="crm.customer",
                verbose_name="referrer",
            ),
        ),
        migrations.AlterField(
            model_name="referralcode",
            name="customer",
            field=models.OneToOneField(
                on_delete=django.db.models.deletion.CASCADE,
                related_name="referral_code",
                to="crm.customer",
                verbose_name="customer",
            ),
        ),
        migrations.AlterField(
            model_name="rewardredemption",
            name="coupon",
            field=models.OneToOneField(
                on_delete=django.db.models.deletion.PROTECT,
                related_name="reward_redemption",
                to="loyalty.coupon",
                verbose_name="coupon",
            ),
        ),
        migrations.AlterField(
            model_name="rewardredemption",
            name="customer",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.PROTECT,
                related_name="reward_redemptions",
                to="crm.customer",
                verbose_name="customer",
            ),
        ),
        migrations.AlterField(
            model_name="rewardredemption",
            name="ledger_entry",
            field=models.OneToOneField(
                on_delete=django.db.models.deletion.PROTECT,
                related_name="reward_redemption",
                to="loyalty.ledgerentry",
                verbose_name="ledger entry",
            ),
        ),
        migrations.AlterField(
            model_name="rewardredemption",
            name="reward",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.PROTECT,
                related_name="redemptions",
                to="loyalty.reward",
                verbose_name="reward",
            ),
        ),
        migrations.AlterField(
            model_name="ruleusage",
            name="account",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to="loyalty.loyaltyaccount",
                verbose_name="loyalty account",
            ),
        ),
        migrations.AlterField(
            model_name="ruleusage",
            name="rule",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to="loyalty.earnrule",
                verbose_name="rule",
            ),
        ),
        migrations.AlterField(
            model_name="tierchange",
            name="account",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.PROTECT,
                related_name="tier_changes",
                to="loyalty.loyaltyaccount",
                verbose_name="loyalty account",
            ),
        ),
        migrations.AlterField(
            model_name="tierchange",
            name="created_by",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
                verbose_name="changed by",
            ),
        ),
        migrations.AlterField(
            model_name="tierchange",
            name="from_tier",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to="loyalty.tier",
                verbose_name="from tier",
            ),
        ),
        migrations.AlterField(
            model_name="tierchange",
            name="to_tier",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to="loyalty.tier",
                verbose_name="to tier",
            ),
        ),
    ]
