import pytest
from django.test import override_settings

from campaigns import signing


def test_tokens_round_trip_and_are_short_enough_for_an_sms():
    message_id = 123_456_789
    assert signing.unsubscribe_token_read(signing.unsubscribe_token(message_id)) == message_id
    assert signing.open_token_read(signing.open_token(message_id)) == message_id
    ref = signing.click_token_read(signing.click_token(message_id, 7))
    assert (ref.message_id, ref.link) == (message_id, 7)
    assert len(signing.click_token(message_id, 7)) <= 24


def test_a_token_of_one_purpose_is_refused_for_another():
    token = signing.open_token(42)
    with pytest.raises(signing.BadToken):
        signing.unsubscribe_token_read(token)
    with pytest.raises(signing.BadToken):
        signing.click_token_read(token)


@pytest.mark.parametrize(
    "token",
    ["", "abc", "1.", ".AAAAAAAAAAAAAAAA", "x" * 200, "G.AAAAAAAAAAAAAAAA", "1-2.AAAAAAAAAAAAAAAA"],
)
def test_forged_or_malformed_tokens_are_refused(token):
    with pytest.raises(signing.BadToken):
        signing.unsubscribe_token_read(token)
    with pytest.raises(signing.BadToken):
        signing.click_token_read(token)


def test_changing_the_message_id_of_a_real_token_breaks_it():
    value, signature = signing.unsubscribe_token(41).split(".")
    with pytest.raises(signing.BadToken):
        signing.unsubscribe_token_read(f"{signing._b62(42)}.{signature}")


def test_tokens_survive_a_secret_key_rotation():
    token = signing.unsubscribe_token(5)
    from django.conf import settings

    with override_settings(SECRET_KEY="a-new-key-" * 5, SECRET_KEY_FALLBACKS=[settings.SECRET_KEY]):
        assert signing.unsubscribe_token_read(token) == 5
    with override_settings(SECRET_KEY="a-new-key-" * 5, SECRET_KEY_FALLBACKS=[]):
        with pytest.raises(signing.BadToken):
            signing.unsubscribe_token_read(token)


@pytest.mark.parametrize("message_id", [0, 1, 61, 62, 123_456_789, 2**63 - 1])
def test_the_fast_signing_makes_the_tokens_djangos_signer_makes(message_id):
    # The send path signs with a precomputed key and hmac.digest; links already in inboxes were signed by
    # the Signer, and the pages verify with it: the two must agree to the character.
    b62 = signing._b62(message_id)
    assert signing.unsubscribe_token(message_id) == signing._signer(signing.UNSUBSCRIBE).sign(b62)
    assert signing.open_token(message_id) == signing._signer(signing.OPEN).sign(b62)
    expected = signing._signer(signing.CLICK).sign(f"{b62}-{signing._b62(7)}")
    assert signing.click_token(message_id, 7) == expected


def test_the_fast_signing_follows_a_change_of_secret_key():
    before = signing.open_token(9)
    with override_settings(SECRET_KEY="another-key-" * 5):
        after = signing.open_token(9)
        assert after == signing._signer(signing.OPEN).sign(signing._b62(9))
    assert after != before


def test_the_click_token_maker_makes_click_tokens():
    make = signing.click_token_maker(123_456)
    assert [make(link) for link in (0, 7, 61, 62, 999)] == [
        signing.click_token(123_456, link) for link in (0, 7, 61, 62, 999)
    ]
    with pytest.raises(ValueError):
        make(1000)
