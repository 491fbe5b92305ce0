"""Membership conditions: has (none of) these tags, is (not) in these static lists."""

from __future__ import annotations

from django.apps import apps
from django.db.models import Q
from django.utils.functional import Promise
from django.utils.translation import gettext_lazy

from crm.segments import sql
from crm.segments.fields.base import ConditionError, ConditionType, parse_list, parse_number


class _IdListCondition(ConditionType):
    """A condition whose value is a list of row ids that must exist (tags, static lists)."""

    model_name: str
    missing_message: Promise

    def clean_value(self, operator, raw):
        ids = parse_list(raw, lambda v: parse_number(v, integer=True, minimum=1))
        model = apps.get_model("crm", self.model_name)
        found = set(model.objects.filter(pk__in=ids).values_list("pk", flat=True))
        missing = [i for i in ids if i not in found]
        if missing:
            raise ConditionError(self.missing_message % {"id": missing[0]})
        return ids

    def schema(self):
        model = apps.get_model("crm", self.model_name)
        choices = [[pk, name] for pk, name in model.objects.order_by("name").values_list("pk", "name")[:2000]]
        data = super().schema()
        for operator in data["operators"]:
            operator["input"]["choices"] = choices  # one query for every operator, not one each
        return data

    def value_input(self, operator):
        return {"type": "choices", "choices": []}


class TagCondition(_IdListCondition):
    key = "tags.tagged"
    label = gettext_lazy("Tags")
    group = "tags"
    kind_label = gettext_lazy("tag")
    operators = ("has_any", "has_all", "has_none")
    model_name = "Tag"
    missing_message = gettext_lazy("tag %(id)s does not exist")

    def to_q(self, condition, ctx):
        from crm.models import CustomerTag

        if condition.operator == "has_all":
            q = Q()
            for tag_id in condition.value:
                q &= sql.exists_q(CustomerTag.objects.filter(tag_id=tag_id), "customer")
            return q
        rows = CustomerTag.objects.filter(tag_id__in=condition.value)
        return sql.exists_q(rows, "customer", negated=condition.operator == "has_none")


class StaticListCondition(_IdListCondition):
    key = "lists.member"
    label = gettext_lazy("Static list")
    group = "tags"
    kind_label = gettext_lazy("static list")
    operators = ("member_of_any", "member_of_none")
    model_name = "StaticList"
    missing_message = gettext_lazy("static list %(id)s does not exist")

    def to_q(self, condition, ctx):
        from crm.models import StaticListMember

        rows = StaticListMember.objects.filter(static_list_id__in=condition.value)
        return sql.exists_q(rows, "customer", negated=condition.operator == "member_of_none")
