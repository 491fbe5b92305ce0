"""Forms of the segment admin: the rule builder widget and the static-list upload."""

from __future__ import annotations

import json

from django import forms
from django.template.loader import render_to_string
from django.urls import NoReverseMatch, reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from crm.models import Segment, StaticList
from crm.segments.fields import RuleInvalid, builder_schema, validate_rule
from crm.segments.services import match_kinds


def builder_labels() -> dict[str, str]:
    """Every string the builder script shows, translated here so the script carries none."""
    return {
        "all": _("All of these (AND)"),
        "any": _("Any of these (OR)"),
        "add_condition": _("Add condition"),
        "add_group": _("Add group"),
        "remove": _("Remove"),
        "group": _("group %(n)s"),
        "condition": _("condition %(n)s"),
        "choose_field": _("Choose a field…"),
        "operator": _("operator"),
        "unknown_field": _("unknown field: %(field)s"),
        "when": _("When"),
        "any_time": _("at any time"),
        "last_days": _("in the last … days"),
        "between": _("between"),
        "days": _("days"),
        "and": _("and"),
        "add_property": _("Add property filter"),
        "property": _("property"),
        "value": _("value"),
        "values_hint": _("comma-separated"),
        "any_channel": _("any channel"),
        "counting": _("Counting…"),
        "members": _("%(n)s customers match"),
        "one_member": _("1 customer matches"),
        "no_members": _("No customer matches"),
        "sample": _("Show %(n)s of them"),
        "errors": _("This rule cannot be used yet:"),
        "failed": _("The count failed; try again."),
        "empty_rule": _("No conditions: every customer (except erased ones) matches."),
        "name": _("Name"),
        "email": _("Email"),
        "phone": _("Phone"),
        "city": _("City"),
        "show_json": _("Rule as JSON"),
    }


class RuleBuilderWidget(forms.Widget):
    """A hidden textarea holding the rule JSON, and the builder (static/crm/segments/builder.js) that
    edits it through a form of groups and conditions and shows the live count beside it."""

    class Media:
        js = ["crm/segments/builder.js"]
        css = {"all": ["crm/segments/builder.css"]}

    def format_value(self, value):
        if value in (None, ""):
            return json.dumps({"op": "and", "conditions": []})
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)

    def render(self, name, value, attrs=None, renderer=None):
        try:
            preview_url = reverse("admin:crm_segment_preview")
        except NoReverseMatch:
            preview_url = ""
        attrs = self.build_attrs(self.attrs, attrs)
        return render_to_string(
            "admin/crm/segments/rule_builder_widget.html",
            {
                "name": name,
                "id": attrs.get("id", f"id_{name}"),
                "value": self.format_value(value),
                "schema": builder_schema(),
                "labels": builder_labels(),
                "preview_url": preview_url,
            },
        )

    def value_from_datadict(self, data, files, name):
        return data.get(name)


class SegmentForm(forms.ModelForm):
    rule = forms.JSONField(label=gettext_lazy("Rule"), widget=RuleBuilderWidget)

    class Meta:
        model = Segment
        fields = ["name", "description", "rule"]

    def clean_rule(self):
        rule = self.cleaned_data["rule"]
        try:
            validate_rule(rule)
        except RuleInvalid as e:
            raise forms.ValidationError(e.messages)
        return rule


class StaticListForm(forms.ModelForm):
    upload = forms.FileField(
        label=gettext_lazy("Add customers from a CSV file"),
        required=False,
        help_text=gettext_lazy(
            "One customer a line, in the first column. A first line naming the column (customer_id, "
            "external_id, email, phone, wechat_openid, ...) says what the values are; otherwise choose below."
        ),
    )
    paste = forms.CharField(
        label=gettext_lazy("Or paste identifiers"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text=gettext_lazy("One a line."),
    )
    match_by = forms.ChoiceField(label=gettext_lazy("Match by"), required=False)

    class Meta:
        model = StaticList
        fields = ["name", "description"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["match_by"].choices = [("", _("From the file's header line")), *match_kinds()]

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("paste") and not cleaned.get("match_by"):
            self.add_error("match_by", _("Say what the pasted values are."))
        if cleaned.get("upload") and cleaned.get("paste"):
            self.add_error("paste", _("Upload a file or paste identifiers, not both at once."))
        return cleaned


class AddToStaticListForm(forms.Form):
    static_list = forms.ModelChoiceField(label=gettext_lazy("Static list"), queryset=StaticList.objects.all())


class SnapshotForm(forms.Form):
    purpose = forms.CharField(label=gettext_lazy("Purpose"), max_length=200, required=False)
