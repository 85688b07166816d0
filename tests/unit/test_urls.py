"""Passwords never reach logs: one masking function for every URL celeriac prints."""

from __future__ import annotations

from celeriac.urls import mask_url


def test_mask_url() -> None:
    assert mask_url("amqp://guest:guest@localhost:5672//") == "amqp://guest:**@localhost:5672//"
    assert mask_url("redis://:s3cret@h:1/0") == "redis://:**@h:1/0"
    assert mask_url("memory://") == "memory://"
    assert mask_url("amqp://u:p1@a//;amqp://u:p2@b//") == "amqp://u:**@a//;amqp://u:**@b//"
