"""The Anthropic client, built once per worker. Temporal owns retries, so the SDK makes none."""

from anthropic import AsyncAnthropic

from brightrun.settings import Settings


def create_claude_client(settings: Settings) -> AsyncAnthropic:
    return AsyncAnthropic(
        api_key=settings.anthropic_key_value(),
        base_url=settings.anthropic_base_url,
        max_retries=0,  # each call sets its own timeout, sized from its max_tokens
    )
