"""Recommendation tables: item-to-item affinities rebuilt nightly from order lines."""

from django.db import models
from django.utils.translation import gettext_lazy as _


class ProductAffinity(models.Model):
    """Item-to-item "bought together": `related_product` is often bought by customers who bought
    `product`. Rebuilt nightly from order lines (crm.recommendations.services)."""

    product = models.ForeignKey(
        "crm.Product", on_delete=models.CASCADE, related_name="+", db_index=False, verbose_name=_("product")
    )
    related_product = models.ForeignKey(
        "crm.Product", on_delete=models.CASCADE, related_name="+", verbose_name=_("related product")
    )
    customers = models.PositiveIntegerField(_("customers who bought both"))
    score = models.FloatField(_("score"))
    computed_at = models.DateTimeField(_("computed at"))

    class Meta:
        verbose_name = _("product affinity")
        verbose_name_plural = _("product affinities")
        constraints = [
            models.UniqueConstraint(fields=["product", "related_product"], name="crm_productaffinity_uniq")
        ]

    def __str__(self) -> str:
        return f"{self.product_id} → {self.related_product_id}"
