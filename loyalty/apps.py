from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class LoyaltyConfig(AppConfig):
    name = "loyalty"
    verbose_name = _("Loyalty")

    def ready(self):
        from loyalty.event_types import register as event_types_register

        event_types_register()
        from crm.services.customers import merge_handler_register
        from loyalty.services.members import members_merge
        from loyalty.services.merge import customer_merge_fold

        # crm calls these inside its merge transaction (by label, without knowing loyalty): the ledger
        # folds two customers' accounts into one; members fold logins, referral codes and referrals.
        merge_handler_register("loyalty", customer_merge_fold)
        merge_handler_register("loyalty.members", members_merge)
        from loyalty.services.bulk_adjust import bulk_adjustments_reaper_register
        from loyalty.services.lifecycle import expiry_runs_reaper_register

        # crm's lease reaper resumes the bulk adjustments and expiry runs whose worker died.
        bulk_adjustments_reaper_register()
        expiry_runs_reaper_register()
