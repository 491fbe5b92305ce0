"""The customer list's search: from what staff typed, a few targeted index lookups instead of Django's OR of
icontains across joins, so it stays fast on a million customers."""

from __future__ import annotations

import re

from django.db import connection
from django.db.models import F, Lookup, Q

from crm.models import CustomerIdentity
from crm.services.identities import normalise_phone

# How many customers one identifier lookup may return before the search gives up on it.
IDENTITY_MATCH_LIMIT = 500
_EMAIL_LIKE = re.compile(r"^[^@\s]*@[^@\s]*$")
_PHONE_LIKE = re.compile(r"^\+?[\d\s\-().]{5,}$")


class _ILike(Lookup):
    """`name ILIKE '%term%'`, which the trigram GIN index (crm_customer_name_trgm) answers. Django's own
    icontains compiles to UPPER(name) LIKE UPPER(...), which that index cannot serve. Used as an
    expression in filter(), never registered on the field."""

    lookup_name = "ilike"
    prepare_rhs = False

    def as_sql(self, compiler, connection):
        lhs, lhs_params = self.process_lhs(compiler, connection)
        rhs, rhs_params = self.process_rhs(compiler, connection)
        return f"{lhs} ILIKE {rhs}", [*lhs_params, *rhs_params]


def _name_matches(term: str) -> Q:
    if len(term) < 3:
        # Fewer than three characters make no trigram: a substring search would scan the table. A prefix
        # (a surname, or surname and first given character) is what staff type, and the index
        # crm_customer_name_upper_prefix serves Django's istartswith.
        return Q(name__istartswith=term)
    if connection.vendor == "postgresql":
        pattern = "%" + connection.ops.prep_for_like_query(term) + "%"
        return Q(_ILike(F("name"), pattern))
    return Q(name__icontains=term)


def customer_search_filter(term: str) -> Q:
    """A filter for the customer list from what staff typed in the search box: an exact identifier of any
    kind, then by the shape of the term an email (exact or prefix), a phone (normalised, exact or
    prefix), a customer id or external id, or a name (substring). Every branch is one index lookup."""
    term = term.strip()
    candidates = {term, term.lower()}
    q = Q()
    if "@" in term and _EMAIL_LIKE.match(term):
        q |= Q(email__startswith=term.lower())  # the exact address is its own prefix
    elif _PHONE_LIKE.match(term):
        phone = normalise_phone(term)
        digits = phone.lstrip("+")
        candidates |= {phone, digits}
        q |= Q(phone__startswith=phone)
        if not phone.startswith("+"):
            q |= Q(phone__startswith="+86" + digits)  # a mainland number typed without its country code
        if digits.isascii() and digits.isdigit() and len(digits) <= 18:
            q |= Q(pk=int(digits))
        q |= Q(external_id=term)
    else:
        if term.startswith("#") and term[1:].isascii() and term[1:].isdigit() and len(term) <= 19:
            q |= Q(pk=int(term[1:]))
        q |= Q(external_id=term)
        if not any(ch.isdigit() for ch in term):
            # Names carry no digits; a term with digits is an id (openid, buyer id), and a 30-character
            # id would cost the trigram index dozens of posting lists for nothing.
            q |= _name_matches(term)
    # Identifiers (openids, buyer ids, device ids, and emails and phones stored as identities) are looked
    # up first, by the indexed value, so the main query stays an OR of index scans on one table.
    identity_ids = list(
        CustomerIdentity.objects.filter(value__in=sorted(candidates)).values_list("customer_id", flat=True)[
            :IDENTITY_MATCH_LIMIT
        ]
    )
    if identity_ids:
        q |= Q(pk__in=sorted(set(identity_ids)))
    return q
