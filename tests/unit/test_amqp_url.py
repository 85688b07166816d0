"""AMQP transport URLs, options and handshake values, without a broker."""

from __future__ import annotations

import ssl
from typing import Any

import pytest

from celeriac import __version__
from celeriac.errors import ConfigurationError
from celeriac.transports._amqp_connection import _negotiate_heartbeat
from celeriac.transports._amqp_url import (
    AMQPOptions,
    BrokerAddress,
    client_properties,
    make_ssl_context,
    parse_options,
    parse_url,
    parse_urls,
    product_version,
    qos_global_for,
    version_tuple,
)
from celeriac.transports.amqp import AMQPTransport
from celeriac.transports.registry import transport_for_url


def address(url: str) -> BrokerAddress:
    return parse_url(url)[0]


@pytest.mark.parametrize(
    ("url", "vhost"),
    [
        ("amqp://", "/"),
        ("amqp://localhost", "/"),
        ("amqp://localhost/", "/"),
        ("amqp://localhost//", "/"),
        ("amqp://localhost/%2F", "/"),
        ("amqp://localhost/prod", "prod"),
        ("amqp://localhost//prod", "/prod"),
        ("amqp://localhost/a%2Fb", "a/b"),
        ("amqp://localhost/a/b", "a/b"),
        ("amqp://localhost/sp%20ace", "sp ace"),
    ],
)
def test_vhost(url: str, vhost: str) -> None:
    assert address(url).vhost == vhost


def test_defaults() -> None:
    a = address("amqp://")
    assert (a.host, a.port, a.userid, a.password, a.vhost, a.tls) == (
        "localhost",
        5672,
        "guest",
        "guest",
        "/",
        False,
    )


def test_every_part_and_percent_decoding() -> None:
    a = address("amqp://us%40er:p%3Ass%2Fw@rabbit.example:5673/v%23h")
    assert (a.host, a.port, a.userid, a.password, a.vhost) == (
        "rabbit.example",
        5673,
        "us@er",
        "p:ss/w",
        "v#h",
    )


def test_user_without_password_and_empty_password() -> None:
    assert (address("amqp://bob@h//").userid, address("amqp://bob@h//").password) == (
        "bob",
        "guest",
    )
    assert address("amqp://bob:@h//").password == ""


def test_ipv6_host() -> None:
    a = address("amqp://[::1]:5680//")
    assert (a.host, a.port) == ("::1", 5680)
    assert str(a) == "amqp://guest@[::1]:5680/%2F"


def test_password_is_not_in_the_repr_or_str() -> None:
    a = address("amqp://u:s3cret@h//")
    assert "s3cret" not in repr(a)
    assert "s3cret" not in str(a)


def test_tls_schemes_and_ports() -> None:
    assert (address("amqps://h//").tls, address("amqps://h//").port) == (True, 5671)
    assert address("amqps://h:1234//").port == 1234
    assert (address("pyamqp://h//").tls, address("pyamqp://h//").port) == (False, 5672)
    opts = AMQPOptions(ssl=True)
    tls = parse_url("amqp://h//", opts)[0]
    assert (tls.tls, tls.port) == (True, 5671)
    assert parse_url("AMQP://h//")[0].port == 5672


@pytest.mark.parametrize("url", ["redis://h//", "memory://", "h:5672", "amqp://h:notaport//"])
def test_bad_urls(url: str) -> None:
    with pytest.raises(ConfigurationError, match="broker url"):
        parse_url(url)


def test_failover_list() -> None:
    addresses, _, _ = parse_urls("amqp://a:1//; amqps://u:p@b/v ;pyamqp://c//;")
    assert [(a.host, a.port, a.vhost, a.tls) for a in addresses] == [
        ("a", 1, "/", False),
        ("b", 5671, "v", True),
        ("c", 5672, "/", False),
    ]
    assert addresses[1].userid == "u"


def test_empty_failover_list() -> None:
    with pytest.raises(ConfigurationError, match="names no broker"):
        parse_urls(" ; ")


def test_option_defaults() -> None:
    _, opts, ignored = parse_urls("amqp://")
    assert opts == AMQPOptions()
    assert (opts.heartbeat, opts.connect_timeout, opts.frame_max, opts.channel_max) == (
        120.0,
        4.0,
        131072,
        65535,
    )
    assert (opts.ssl, opts.confirm_publish, opts.publish_timeout, opts.login_method) == (
        False,
        False,
        10.0,
        "PLAIN",
    )
    assert ignored == {}


def test_query_options_and_keywords_win() -> None:
    url = "amqp://h//?heartbeat=10&confirm_publish=yes&ssl=1&login_method=amqplain"
    addresses, opts, _ = parse_urls(url, {"heartbeat": 30, "publish_timeout": None})
    assert opts.heartbeat == 30
    assert opts.confirm_publish is True
    assert opts.ssl is True
    assert opts.login_method == "AMQPLAIN"
    assert opts.publish_timeout == 10.0  # None: the default
    assert addresses[0].tls


def test_unknown_options_are_ignored_not_fatal() -> None:
    _, _, ignored = parse_urls("amqp://", {"polling_interval": 1, "heartbeat": 0})
    assert ignored == {"polling_interval": 1}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"heartbeat": "often"}, "not a number"),
        ({"heartbeat": -1}, "0 or more"),
        ({"publish_timeout": 0}, "more than 0"),
        ({"connect_timeout": 0}, "more than 0"),
        ({"frame_max": 100}, "not in 4096"),
        ({"channel_max": 0}, "not in 1"),
        ({"confirm_publish": "maybe"}, "not a boolean"),
        ({"login_method": "EXTERNAL"}, "not one of PLAIN, AMQPLAIN"),
        ({"ssl": {"ca_cert": "x"}}, "ssl option 'ca_cert' is unknown"),
    ],
)
def test_bad_options(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        parse_options(options)


def test_ssl_context_verifies_by_default() -> None:
    ctx, name = make_ssl_context(AMQPOptions(ssl=True), "rabbit.example")
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.check_hostname
    assert name == "rabbit.example"


def test_ssl_context_from_celery_style_dict() -> None:
    opts = AMQPOptions(ssl={"cert_reqs": ssl.CERT_NONE, "server_hostname": "other"})
    ctx, name = make_ssl_context(opts, "h")
    assert ctx.verify_mode == ssl.CERT_NONE
    assert not ctx.check_hostname
    assert name == "other"
    ctx, _ = make_ssl_context(AMQPOptions(ssl={"cert_reqs": "required"}), "h")
    assert ctx.verify_mode == ssl.CERT_REQUIRED


def test_ssl_context_as_given() -> None:
    mine = ssl.create_default_context()
    assert make_ssl_context(AMQPOptions(ssl=mine), "h") == (mine, "h")


def test_ssl_bad_files_and_cert_reqs() -> None:
    with pytest.raises(ConfigurationError, match="cannot set up TLS"):
        make_ssl_context(AMQPOptions(ssl={"ca_certs": "/nonexistent/ca.pem"}), "h")
    with pytest.raises(ConfigurationError, match="cert_reqs"):
        make_ssl_context(AMQPOptions(ssl={"cert_reqs": "sometimes"}), "h")


def test_client_properties() -> None:
    props = client_properties(True, "worker-1")
    assert props["product"] == "celeriac"
    assert props["product_version"] == __version__
    assert props["connection_name"] == "worker-1"
    assert props["capabilities"] == {
        "authentication_failure_close": True,
        "connection.blocked": True,
        "consumer_cancel_notify": True,
        "per_consumer_qos": True,
        "publisher_confirms": True,
    }
    bare = client_properties(False)
    assert "capabilities" not in bare
    assert "connection_name" not in bare


@pytest.mark.parametrize(
    ("client", "server", "agreed"),
    [(120, 60, 60), (10, 60, 10), (120, 0, 120), (0, 60, 0), (0, 0, 0), (0.4, 60, 1)],
)
def test_heartbeat_negotiation(client: float, server: int, agreed: int) -> None:
    assert _negotiate_heartbeat(client, server) == agreed


@pytest.mark.parametrize(
    ("props", "expected"),
    [
        ({"product": "RabbitMQ", "version": "3.2.4"}, False),
        ({"product": "RabbitMQ", "version": "3.3.0"}, True),
        ({"product": "RabbitMQ", "version": "3.10.8"}, True),
        ({"product": "RabbitMQ", "version": "3.13.7"}, True),
        ({"product": "RabbitMQ", "version": "4.0.2"}, False),
        ({"product": b"RabbitMQ", "version": b"3.12.1"}, True),
        ({"product": "RabbitMQ", "version": "garbage"}, False),
        ({"product": "LavinMQ", "version": "1.2.3"}, False),
        ({}, False),
    ],
)
def test_qos_global_rule(props: dict[str, Any], expected: bool) -> None:
    assert qos_global_for(props) is expected


def test_version_tuple_and_product_version() -> None:
    assert version_tuple("3.10.8") == (3, 10, 8)
    assert version_tuple("3.13.0-rc.1") == (3, 13, 0)
    assert version_tuple("") == ()
    assert product_version({"product": "RabbitMQ", "version": "3.10.8"}) == "RabbitMQ 3.10.8"
    assert product_version({}) == "unknown unknown"


def test_transport_is_built_without_connecting() -> None:
    transport = transport_for_url("pyamqp://u:p@127.0.0.1:1/v", heartbeat=0, confirm_publish=1)
    assert isinstance(transport, AMQPTransport)
    assert not transport.connected
    assert transport.config.heartbeat == 0
    assert transport.confirm_publish is True
    assert transport.addresses[0].vhost == "v"
    assert transport.server_properties == {}
    assert transport.qos_global_default() is False
    assert "not connected" in repr(transport)
    transport.close()  # never connected: nothing to do
    transport.wakeup()


def test_calls_before_connect_say_so() -> None:
    from celeriac.errors import ConnectionError

    transport = AMQPTransport("amqp://127.0.0.1:1//")
    with pytest.raises(ConnectionError, match="not connected, call connect"):
        transport.publish(b"x", "", "q")
    with pytest.raises(ConnectionError, match="not connected, call connect"):
        transport.drain_events(0)
    with pytest.raises(ConnectionError, match="gone"):
        transport.ack(1)


def test_registry_passes_amqp_failover_lists_whole() -> None:
    from celeriac.transports.amqp import AMQPTransport
    from celeriac.transports.registry import transport_for_url

    transport = transport_for_url("amqp://a:1//;amqp://b:2//")
    assert isinstance(transport, AMQPTransport)
    with pytest.raises(ConfigurationError, match="mixes schemes"):
        transport_for_url("amqp://a//;memory://")
