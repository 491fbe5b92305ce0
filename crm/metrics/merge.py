"""Customer merges and metrics: a metrics row is derived data, one per customer.

The merge service re-points every relation of the merged customer to the survivor, which for this
one-to-one row would collide with the survivor's own. The merged customer's row is dropped instead; the
survivor's is recomputed, with the moved orders, by the next computation."""

from crm.models.metrics import CustomerMetrics


def metrics_merge_handler(*, survivor, merged) -> dict:
    CustomerMetrics.objects.filter(customer=merged).delete()
    return {}


def register_merge_handler() -> None:
    """Called once at start-up (CrmConfig.ready)."""
    from crm.services.customers import merge_handler_register

    merge_handler_register("crm.metrics", metrics_merge_handler)
