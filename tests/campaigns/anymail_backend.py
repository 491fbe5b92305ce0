"""Anymail's own test backend, answering like an ESP by the recipient's local part: "rejected" is refused,
"eNNN" fails with HTTP status NNN (Retry-After: 30 on 429), anything else is sent with the id esp-<address>."""

import requests
from anymail.backends.test import EmailBackend as AnymailTestBackend
from anymail.exceptions import AnymailRequestsAPIError
from anymail.message import AnymailRecipientStatus


class EmailBackend(AnymailTestBackend):
    def post_to_esp(self, payload, message):
        address = payload.recipient_emails[0]
        local = address.split("@")[0]
        if local.startswith("e") and local[1:].isdigit():
            response = requests.Response()
            response.status_code = int(local[1:])
            response.reason = "test"
            response._content = b'{"error": "test"}'
            if response.status_code == 429:
                response.headers["Retry-After"] = "30"
            message.anymail_test_response = AnymailRequestsAPIError(
                "ESP said no", response=response, backend=self
            )
        elif local == "rejected":
            message.anymail_test_response = {
                "recipient_status": {address: AnymailRecipientStatus(message_id=None, status="rejected")}
            }
        else:
            message.anymail_test_response = {
                "recipient_status": {
                    address: AnymailRecipientStatus(message_id=f"esp-{address}", status="sent")
                }
            }
        response = message.anymail_test_response
        super().post_to_esp(payload, message)
        return response
