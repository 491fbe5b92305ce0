"""The forms of the customer pages: the profile, a consent decision, a merge, an erasure."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from crm.models import PROFILE_FIELDS, ConsentChannel, ConsentStatus, Customer, Tag
from crm.services.customers import identity_owner_id
from crm.services.identities import normalise_phone


class CustomerAdminForm(forms.ModelForm):
    class Meta:
        model = Customer
        fields = PROFILE_FIELDS

    def clean_email(self):
        email = (self.cleaned_data.get("email") or "").strip().lower()
        self._refuse_identifier_of_another_customer("email", email)
        return email

    def clean_phone(self):
        phone = normalise_phone(self.cleaned_data.get("phone") or "")
        self._refuse_identifier_of_another_customer("phone", phone)
        return phone

    def _refuse_identifier_of_another_customer(self, kind, value):
        if not value:
            return
        try:
            owner = identity_owner_id(kind=kind, value=value)
        except ValidationError:
            return  # the field's own validation reports the malformed value
        if owner is not None and owner != self.instance.pk:
            raise ValidationError(
                gettext("%(value)s already identifies customer #%(owner)s: merge the two customers instead.")
                % {"value": value, "owner": owner}
            )


class ConsentSetForm(forms.Form):
    channel = forms.ChoiceField(label=_("Channel"), choices=ConsentChannel.choices)
    status = forms.ChoiceField(label=_("Decision"), choices=ConsentStatus.choices, widget=forms.RadioSelect)
    source = forms.CharField(
        label=_("Source"),
        max_length=100,
        help_text=_("Where the customer said so, e.g. phone call, store visit, written request."),
    )


class BulkTagForm(forms.Form):
    tag = forms.ModelChoiceField(
        label=_("Tag"),
        queryset=Tag.objects.filter(kind=Tag.Kind.MANUAL).order_by("name"),
        help_text=_("Rule-applied tags are kept by their rules and cannot be added by hand."),
    )


class MergeForm(forms.Form):
    survivor = forms.TypedChoiceField(label=_("Keep"), coerce=int, widget=forms.RadioSelect)
    reason = forms.CharField(label=_("Reason"), max_length=300)

    def __init__(self, *args, customers, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["survivor"].choices = [(c.pk, f"#{c.pk} {c}") for c in customers]


class EraseForm(forms.Form):
    reason = forms.CharField(
        label=_("Reason"), max_length=300, help_text=_("E.g. the customer's request reference and date.")
    )
    confirm = forms.BooleanField(label=_("I understand that this cannot be undone."), required=True)
