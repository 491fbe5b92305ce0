"""Products, orders, their lines and refunds."""

from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import F, Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from crm.models.customers import Channel, Customer


class Product(models.Model):
    sku = models.CharField(_("SKU"), max_length=64, unique=True)
    name = models.CharField(_("name"), max_length=200)
    category = models.CharField(_("category"), max_length=100, blank=True, db_index=True)
    price = models.DecimalField(
        _("price"), max_digits=12, decimal_places=2, validators=[MinValueValidator(0)]
    )
    currency = models.CharField(_("currency"), max_length=3, default="CNY")
    created_at = models.DateTimeField(_("created at"), default=timezone.now)

    class Meta:
        verbose_name = _("product")
        verbose_name_plural = _("products")
        constraints = [models.CheckConstraint(condition=Q(price__gte=0), name="crm_product_price_nonneg")]

    def __str__(self) -> str:
        return f"{self.name} ({self.sku})"


class OrderStatus(models.TextChoices):
    PAID = "paid", _("Paid")
    PARTIALLY_REFUNDED = "partially_refunded", _("Partially refunded")
    REFUNDED = "refunded", _("Refunded")


class Order(models.Model):
    """A paid order, idempotent on its external id: `fingerprint` is a hash of what was ingested, so a
    repeat of the same order changes nothing and a different order under the same id is refused."""

    # Unique by a pattern-ops index (Meta): it serves the lookups, ON CONFLICT and the admin's prefix
    # search; `unique=True` made two indexes for that on PostgreSQL.
    external_id = models.CharField(_("external order id"), max_length=100)
    # No index of its own: crm_order_cust_placed_cov_idx starts with customer_id and serves every lookup
    # by customer, and one index less is one insert less per imported order.
    customer = models.ForeignKey(
        Customer, on_delete=models.PROTECT, related_name="orders", db_index=False, verbose_name=_("customer")
    )
    channel = models.CharField(_("channel"), max_length=16, choices=Channel.choices, blank=True)
    store = models.CharField(_("store"), max_length=100, blank=True)
    placed_at = models.DateTimeField(_("placed at"))
    currency = models.CharField(_("currency"), max_length=3, default="CNY")
    total = models.DecimalField(_("total"), max_digits=14, decimal_places=2)
    refunded_amount = models.DecimalField(_("refunded amount"), max_digits=14, decimal_places=2, default=0)
    status = models.CharField(
        _("status"), max_length=24, choices=OrderStatus.choices, default=OrderStatus.PAID
    )
    fingerprint = models.CharField(_("fingerprint"), max_length=64, editable=False)
    created_at = models.DateTimeField(_("created at"), default=timezone.now)

    class Meta:
        verbose_name = _("order")
        verbose_name_plural = _("orders")
        ordering = ["-placed_at"]
        indexes = [
            # Covering: a segment condition on a customer's orders in a window (count, net spend, per
            # channel) reads only this index, never the order rows.
            models.Index(
                fields=["customer", "placed_at"],
                include=["status", "channel", "total", "refunded_amount"],
                name="crm_order_cust_placed_cov_idx",
            )
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["external_id"], name="crm_order_external_id_uniq", opclasses=["varchar_pattern_ops"]
            ),
            models.CheckConstraint(condition=Q(total__gte=0), name="crm_order_total_nonneg"),
            models.CheckConstraint(
                condition=Q(refunded_amount__gte=0) & Q(refunded_amount__lte=F("total")),
                name="crm_order_refund_within_total",
            ),
        ]

    def __str__(self) -> str:
        return self.external_id


class OrderLine(models.Model):
    # The unique (order, line_no) index below serves every lookup by order; an order-only index as well
    # would be one more index entry to write for each line.
    order = models.ForeignKey(
        Order, on_delete=models.CASCADE, related_name="lines", db_index=False, verbose_name=_("order")
    )
    line_no = models.PositiveIntegerField(_("line"))
    product = models.ForeignKey(
        Product,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("product"),
    )
    sku = models.CharField(_("SKU"), max_length=64, blank=True)
    name = models.CharField(_("name"), max_length=200, blank=True)
    category = models.CharField(_("category"), max_length=100, blank=True)
    quantity = models.PositiveIntegerField(_("quantity"), default=1)
    unit_price = models.DecimalField(_("unit price"), max_digits=12, decimal_places=2)
    line_total = models.DecimalField(_("line total"), max_digits=14, decimal_places=2)
    refunded_quantity = models.PositiveIntegerField(_("refunded quantity"), default=0)

    class Meta:
        verbose_name = _("order line")
        verbose_name_plural = _("order lines")
        constraints = [
            models.UniqueConstraint(fields=["order", "line_no"], name="crm_orderline_order_line_uniq"),
            models.CheckConstraint(
                condition=Q(refunded_quantity__lte=F("quantity")), name="crm_orderline_refund_within_qty"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.sku} × {self.quantity}"


class Refund(models.Model):
    """A refund against an order, idempotent on its external id."""

    order = models.ForeignKey(
        Order, on_delete=models.PROTECT, related_name="refunds", verbose_name=_("order")
    )
    external_id = models.CharField(_("external refund id"), max_length=100, unique=True)
    amount = models.DecimalField(_("amount"), max_digits=14, decimal_places=2)
    refunded_at = models.DateTimeField(_("refunded at"))
    reason = models.CharField(_("reason"), max_length=300, blank=True)
    lines = models.JSONField(_("refunded lines"), default=list, blank=True)
    fingerprint = models.CharField(_("fingerprint"), max_length=64, editable=False)
    created_at = models.DateTimeField(_("created at"), default=timezone.now)

    class Meta:
        verbose_name = _("refund")
        verbose_name_plural = _("refunds")
        constraints = [models.CheckConstraint(condition=Q(amount__gt=0), name="crm_refund_amount_pos")]

    def __str__(self) -> str:
        return self.external_id
