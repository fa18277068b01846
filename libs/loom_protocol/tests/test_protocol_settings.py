"""What the settings module gives every service besides its fields: URLs shown without passwords."""

from __future__ import annotations

from loom_protocol.settings import redacted


def test_redacted_masks_every_password_of_a_url_list() -> None:
    assert redacted("redis://default:s3cret@127.0.0.1:6380/0") == "redis://default:***@127.0.0.1:6380/0"
    assert redacted("nats://a:p1@h1:4222,nats://h2:4222") == "nats://a:***@h1:4222,nats://h2:4222"
    assert redacted("postgresql://postgres@db/loom") == "postgresql://postgres@db/loom"
    assert redacted("redis://:pw@redis") == "redis://:***@redis"
