"""Member sign-in: password (throttled by django-axes) and one-time links mailed through a real SMTP server
on loopback; sign-up by link records who referred whom."""

import re
import socketserver
import threading
from datetime import timedelta
from email import message_from_bytes, policy
from unittest import mock

import pytest
from django.core import signing
from django.core.cache import cache
from django.db import connection
from django.test import Client
from django.utils import timezone

from crm.models import Customer
from crm.services.customers import customer_upsert
from loyalty.models.rewards import MemberLogin, MemberMagicLinkUse, Referral
from loyalty.services.members import (
    MAGIC_LINK_MAX_AGE,
    MagicLinkInvalid,
    magic_link_consume,
    magic_link_token,
    magic_link_uses_prune,
    member_signup_complete,
    referral_code_for,
    referral_record,
)
from tests.factories import OrderFactory
from tests.loyalty.test_member_support import (
    MEMBER_URLS,
    PASSWORD,
    member_make,
    member_test_setup,  # noqa: F401
)

pytestmark = [pytest.mark.django_db, pytest.mark.urls(MEMBER_URLS)]


# --- A real SMTP server on loopback ---------------------------------------------------------------
# aiosmtpd is not in the lock; this speaks the part of RFC 5321 Django's SMTP backend uses.


class _SMTPHandler(socketserver.StreamRequestHandler):
    def _reply(self, line: str) -> None:
        self.wfile.write((line + "\r\n").encode())

    def handle(self):
        self._reply("220 localhost test SMTP")
        sender, recipients = None, []
        while True:
            raw = self.rfile.readline()
            if not raw:
                return
            command = raw.decode("utf-8", "replace").strip()
            verb = command.split(" ", 1)[0].upper()
            if verb in ("EHLO", "HELO"):
                self._reply("250-localhost")
                self._reply("250 8BITMIME")
            elif verb == "MAIL":
                sender, recipients = command[10:].strip("<> "), []
                self._reply("250 OK")
            elif verb == "RCPT":
                recipients.append(command[8:].strip("<> "))
                self._reply("250 OK")
            elif verb == "DATA":
                self._reply("354 End data with <CR><LF>.<CR><LF>")
                lines = []
                while True:
                    line = self.rfile.readline()
                    if line in (b".\r\n", b".\n", b""):
                        break
                    lines.append(line[1:] if line.startswith(b"..") else line)
                self.server.messages.append(
                    {
                        "from": sender,
                        "to": recipients,
                        "message": message_from_bytes(b"".join(lines), policy=policy.default),
                    }
                )
                self._reply("250 OK queued")
            elif verb == "RSET":
                sender, recipients = None, []
                self._reply("250 OK")
            elif verb == "NOOP":
                self._reply("250 OK")
            elif verb == "QUIT":
                self._reply("221 Bye")
                return
            else:
                self._reply("502 Command not implemented")


class _SMTPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _SMTPHandler)
        self.messages = []


@pytest.fixture
def smtp(settings):
    server = _SMTPServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = server.server_address
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    cache.clear()
    yield server
    server.shutdown()
    server.server_close()


def _link_in(mail) -> str:
    body = mail["message"].get_body(preferencelist=("plain",)).get_content()
    return re.search(r"http://testserver(/member/link/[^/\s]+/)", body).group(1)


# --- Password -------------------------------------------------------------------------------------


def test_password_sign_in_opens_the_portal_and_sign_out_closes_it(client):
    login = member_make(points=1234)

    assert client.get("/member/").status_code == 302
    response = client.post("/member/login/", {"email": login.email, "password": PASSWORD})
    assert response.status_code == 302 and response["Location"] == "/member/"
    home = client.get("/member/")
    assert home.status_code == 200 and b'id="available-points">1234<' in home.content

    client.post("/member/logout/")
    assert client.get("/member/").status_code == 302


def test_a_wrong_password_is_refused_and_repeated_failures_lock_the_address(client, settings):
    settings.AXES_ENABLED = True
    settings.AXES_FAILURE_LIMIT = 3
    login = member_make()

    first = client.post("/member/login/", {"email": login.email, "password": "wrong-wrong"})
    assert first.status_code == 400 and b"Wrong email or password" in first.content
    for _ in range(3):
        client.post("/member/login/", {"email": login.email, "password": "wrong-wrong"})
    locked = client.post("/member/login/", {"email": login.email, "password": PASSWORD})

    assert locked.status_code in (400, 403, 429)
    assert client.get("/member/").status_code == 302


def test_the_portal_does_not_sign_a_member_into_the_staff_admin(client):
    login = member_make()
    client.post("/member/login/", {"email": login.email, "password": PASSWORD})

    admin = client.get("/admin/")

    assert admin.status_code == 302 and "/admin/login/" in admin["Location"]


def test_changing_the_password_signs_out_other_sessions(client):
    login = member_make()
    other = Client()
    other.post("/member/login/", {"email": login.email, "password": PASSWORD})
    client.post("/member/login/", {"email": login.email, "password": PASSWORD})

    response = client.post(
        "/member/password/", {"password1": "new-lotus-2027", "password2": "new-lotus-2027"}
    )

    assert response.status_code == 302
    assert client.get("/member/").status_code == 200
    assert other.get("/member/").status_code == 302


def test_an_erased_customer_cannot_sign_in(client):
    login = member_make()
    Customer.objects.filter(pk=login.customer_id).update(erased_at="2026-01-01T00:00:00Z")

    response = client.post("/member/login/", {"email": login.email, "password": PASSWORD})

    assert response.status_code == 400


# --- One-time links -------------------------------------------------------------------------------


def test_an_emailed_link_signs_the_member_in_once(client, smtp):
    login = member_make()

    sent = client.post("/member/login/link/", {"email": login.email})
    assert sent.status_code == 200
    assert len(smtp.messages) == 1 and smtp.messages[0]["to"] == [login.email]
    link = _link_in(smtp.messages[0])

    confirm = client.get(link)  # what a mail scanner would do: must not use the link up
    assert confirm.status_code == 200 and client.get("/member/").status_code == 302
    assert client.post(link).status_code == 302
    assert client.get("/member/").status_code == 200

    client.post("/member/logout/")
    reused = client.post(link)
    assert reused.status_code == 400 and b"already been used" in reused.content
    assert client.get("/member/").status_code == 302


def test_an_unknown_address_gets_the_same_page_and_no_mail(client, smtp):
    response = client.post("/member/login/link/", {"email": "nobody@example.cn"})

    assert response.status_code == 200 and b"If nobody@example.cn belongs to a member" in response.content
    assert smtp.messages == []


def test_links_expire_after_fifteen_minutes(client):
    login = member_make()
    token = magic_link_token(purpose="in", email=login.email)

    with mock.patch(
        "django.core.signing.time.time", return_value=signing.time.time() + MAGIC_LINK_MAX_AGE + 1
    ):
        response = client.post(f"/member/link/{token}/")

    assert response.status_code == 400 and b"expired" in response.content


def test_a_tampered_link_is_refused():
    login = member_make()
    token = magic_link_token(purpose="in", email=login.email)

    with pytest.raises(MagicLinkInvalid):
        magic_link_consume(token=token.replace(login.email[:3], "zzz", 1) + "x")


def test_too_many_link_requests_for_one_address_stop_sending(client, smtp):
    login = member_make()

    for _ in range(7):
        client.post("/member/login/link/", {"email": login.email})

    assert len(smtp.messages) == 5


@pytest.mark.django_db(transaction=True)
def test_one_link_used_twice_at_once_signs_in_once():
    login = member_make()
    token = magic_link_token(purpose="in", email=login.email)
    barrier = threading.Barrier(2)
    outcomes = []

    def use():
        barrier.wait()
        try:
            outcomes.append(magic_link_consume(token=token).pk)
        except MagicLinkInvalid:
            outcomes.append("refused")
        finally:
            connection.close()

    threads = [threading.Thread(target=use) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)

    assert sorted(map(str, outcomes)) == sorted([str(login.pk), "refused"])


# --- Sign-up and referrals ------------------------------------------------------------------------


def test_joining_through_a_referral_link_creates_the_member_and_records_the_referrer(client, smtp):
    referrer = member_make()
    code = referral_code_for(customer=referrer.customer).code

    page = client.get(f"/member/join/?ref={code}")
    assert page.status_code == 200 and code.encode() in page.content
    client.post("/member/join/", {"email": "New.Friend@Example.cn", "name": "新朋友", "ref": code})
    assert len(smtp.messages) == 1
    client.post(_link_in(smtp.messages[0]))

    new_login = MemberLogin.objects.get(email="new.friend@example.cn")
    assert new_login.customer.name == "新朋友"
    referral = Referral.objects.get(referee=new_login.customer)
    assert (referral.referrer_id, referral.code) == (referrer.customer_id, code)
    assert client.get("/member/").status_code == 200


def test_joining_with_the_address_of_an_existing_customer_claims_that_customer():
    existing = customer_upsert(profile={"email": "shopper@example.cn"}, source="tmall").customer

    login = member_signup_complete(email="Shopper@example.cn", name="")

    assert login.customer_id == existing.pk
    assert Customer.objects.filter(email="shopper@example.cn").count() == 1


def test_referrals_are_not_recorded_for_self_existing_buyers_or_twice():
    referrer = member_make()
    code = referral_code_for(customer=referrer.customer).code
    buyer = customer_upsert(profile={"email": "buyer@example.cn"}).customer
    OrderFactory(customer=buyer)

    member_signup_complete(email=referrer.email, referral_code=code)  # themselves
    member_signup_complete(email="buyer@example.cn", referral_code=code)  # already a customer who bought
    first = member_signup_complete(email="fresh@example.cn", referral_code=code)
    other_code = referral_code_for(customer=member_make().customer).code

    assert referral_record(referee=first.customer, code=other_code) is None  # already referred
    assert list(Referral.objects.values_list("referee__email", flat=True)) == ["fresh@example.cn"]


def test_used_link_nonces_are_pruned_once_their_links_have_expired():
    login = member_make()
    old = magic_link_token(purpose="in", email=login.email)
    with mock.patch("django.core.signing.time.time", return_value=signing.time.time() - 3600):
        stale = magic_link_token(purpose="in", email=login.email)
    magic_link_consume(token=old)
    # Consume the stale link as if it had been used an hour ago.
    with mock.patch("django.core.signing.time.time", return_value=signing.time.time() - 3600):
        magic_link_consume(token=stale, now=timezone.now() - timedelta(hours=1))

    assert magic_link_uses_prune() == 1
    assert MemberMagicLinkUse.objects.count() == 1
