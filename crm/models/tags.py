"""Tags and which customers carry them."""

from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from simple_history.models import HistoricalRecords

from crm.models.customers import Customer


class Tag(models.Model):
    class Kind(models.TextChoices):
        MANUAL = "manual", _("Manual")
        RULE = "rule", _("Rule-applied")

    name = models.CharField(_("name"), max_length=64, unique=True)
    kind = models.CharField(_("kind"), max_length=8, choices=Kind.choices, default=Kind.MANUAL)
    description = models.CharField(_("description"), max_length=300, blank=True)
    created_at = models.DateTimeField(_("created at"), default=timezone.now)

    class Meta:
        verbose_name = _("tag")
        verbose_name_plural = _("tags")
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class CustomerTag(models.Model):
    # Indexed by (customer, tag) through the unique constraint and by (tag, customer) below: the foreign
    # keys' single-column indexes would be redundant with them.
    customer = models.ForeignKey(
        Customer,
        on_delete=models.CASCADE,
        related_name="customer_tags",
        db_index=False,
        verbose_name=_("customer"),
    )
    tag = models.ForeignKey(
        Tag, on_delete=models.CASCADE, related_name="customer_tags", db_index=False, verbose_name=_("tag")
    )
    source = models.CharField(_("source"), max_length=32, default="manual")
    added_at = models.DateTimeField(_("added at"), default=timezone.now)

    history = HistoricalRecords()

    class Meta:
        verbose_name = _("customer tag")
        verbose_name_plural = _("customer tags")
        constraints = [models.UniqueConstraint(fields=["customer", "tag"], name="crm_customertag_uniq")]
        indexes = [
            # "Has tag 5" / "has none of tags 5, 7" in a segment: the customers come from this index alone.
            models.Index(fields=["tag", "customer"], name="crm_customertag_tag_cust_idx")
        ]

    def __str__(self) -> str:
        return str(self.tag_id)
