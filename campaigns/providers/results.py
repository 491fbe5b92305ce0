"""Helpers the providers share to answer a batch: one SendResult per message, in order, whatever happens."""

from __future__ import annotations

from campaigns.providers.base import Outcome, OutgoingMessage, SendResult


def not_attempted(messages: list[OutgoingMessage], *, because: SendResult) -> list[SendResult]:
    """When the provider as a whole said "slow down" or "I am down" (cool_down), the rest of the batch is
    not tried: each would only fail the same way and spend quota. They were never handed over, so a
    retry can never duplicate them."""
    return [
        SendResult(
            message_id=m.message_id,
            outcome=Outcome.RETRY,
            error_code="not_attempted",
            error_detail=f"not tried: the provider answered {because.error_code} to an earlier message",
            retry_after=because.retry_after,
            cool_down=False,
        )
        for m in messages
    ]


def truncate_detail(text: object, limit: int = 500) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"
