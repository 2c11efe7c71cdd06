"""The lab's configuration (netns/config.py): unit parsers, QueueSpec, LabConfig, TOML, presets.

Pure Python: no root, no namespaces, no pyroute2. Error tests check that the message says what
was wrong and shows the right form, since these messages are what a user of `usertcp lab up`
or of a config file sees.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from netns.config import (
    ETH_HLEN,
    LabConfig,
    QueueSpec,
    SenderSpec,
    fmt_percent,
    fmt_rate,
    fmt_time,
    parse_bytes,
    parse_percent,
    parse_queue,
    parse_rate,
    parse_time,
    preset,
    presets,
)

WAN = LabConfig(rate=50_000_000, delay=0.02, queue=QueueSpec(1, "bdp"))


# ---------------------------------------------------------------------------------------------
# Unit parsers


@pytest.mark.parametrize(
    "text, bps",
    [
        ("100mbit", 100_000_000), ("1gbit", 10**9), ("50M", 50_000_000), ("1.5G", 1_500_000_000),
        ("800kbit", 800_000), ("2000000", 2_000_000), ("10 Mbit/s", 10_000_000),
        (" 1gbits ", 10**9), ("1.234567mbit", 1_234_567),
    ],
)
def test_parse_rate(text, bps):
    assert parse_rate(text) == bps


@pytest.mark.parametrize(
    "text, hint",
    [
        ("50mbps", "ambiguous"), ("50MB", "ambiguous"), ("fast", "e.g. 100mbit"),
        ("0", "at least 1"), ("1.5", "whole number"), ("-5M", "e.g. 100mbit"),
    ],
)
def test_parse_rate_errors(text, hint):
    with pytest.raises(ValueError, match="invalid rate") as e:
        parse_rate(text)
    assert hint in str(e.value) and repr(text) in str(e.value)


@pytest.mark.parametrize(
    "text, n",
    [
        ("62500", 62500), ("64k", 64000), ("64ki", 65536), ("64kib", 65536), ("1.5m", 1_500_000),
        ("1mi", 2**20), ("256kb", 256_000), ("100 bytes", 100), ("62500B", 62500),
    ],
)
def test_parse_bytes(text, n):
    assert parse_bytes(text) == n


@pytest.mark.parametrize("text, hint", [("lots", "e.g. 62500, 64k"), ("0", "at least 1"),
                                        ("1.5", "whole number"), ("64g", "e.g. 62500")])
def test_parse_bytes_errors(text, hint):
    with pytest.raises(ValueError, match="invalid size") as e:
        parse_bytes(text)
    assert hint in str(e.value)


@pytest.mark.parametrize(
    "bps, text",
    [(50e6, "50 Mbit/s"), (1.5e9, "1.5 Gbit/s"), (800e3, "800 kbit/s"), (999, "999 bit/s")],
)
def test_fmt_rate(bps, text):
    assert fmt_rate(bps) == text


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("20ms", 0.02), ("0.5s", 0.5), ("150us", 0.00015), ("150µs", 0.00015),
        ("1.5 ms", 0.0015), ("0", 0.0), ("0.0", 0.0), ("0ms", 0.0), ("20MS", 0.02), (".5s", 0.5),
    ],
)
def test_parse_time(text, seconds):
    assert parse_time(text) == seconds


@pytest.mark.parametrize(
    "text, hint",
    [
        ("20", "add a unit (ms, s or us), e.g. 20ms"), ("0.5", "e.g. 0.5ms"),
        ("20 min", "e.g. 20ms, 0.5s"), ("-5ms", "non-negative"), ("soon", "e.g. 20ms"),
    ],
)
def test_parse_time_errors(text, hint):
    with pytest.raises(ValueError, match="invalid time") as e:
        parse_time(text)
    assert hint in str(e.value)


@pytest.mark.parametrize(
    "seconds, text",
    [
        (0.02, "20ms"), (0.00015, "150us"), (1.5, "1.5s"), (0.5, "500ms"), (0, "0"),
        (0.1 + 0.2, "300ms"), (2.5e-7, "0.25us"), (0.0015, "1.5ms"),
    ],
)
def test_fmt_time(seconds, text):
    assert fmt_time(seconds) == text


@pytest.mark.parametrize("seconds", [0.02, 0.00015, 0.123456789, 0.000000001, 0.5, 0.333])
def test_fmt_time_round_trips(seconds):
    assert parse_time(fmt_time(seconds)) == seconds


@pytest.mark.parametrize(
    "text, fraction",
    [("0.1%", 0.001), ("1%", 0.01), ("0%", 0.0), ("0", 0.0), ("99.9 %", 0.999), ("0.5%", 0.005)],
)
def test_parse_percent(text, fraction):
    assert parse_percent(text) == fraction


@pytest.mark.parametrize(
    "text, hint",
    [
        ("1", 'write it with a % sign, e.g. 1%'), ("0.001", "e.g. 0.001%"),
        ("100%", "below 100%"), ("150%", "below 100%"), ("-1%", "from 0 to below 100"),
        ("some", "e.g. 0.1%"),
    ],
)
def test_parse_percent_errors(text, hint):
    with pytest.raises(ValueError, match="invalid percentage") as e:
        parse_percent(text)
    assert hint in str(e.value)


@pytest.mark.parametrize("fraction, text", [(0.001, "0.1%"), (0.01, "1%"), (0.0, "0%"),
                                            (0.005, "0.5%"), (0.25, "25%")])
def test_fmt_percent(fraction, text):
    assert fmt_percent(fraction) == text
    assert parse_percent(text) == fraction


# ---------------------------------------------------------------------------------------------
# Queue


@pytest.mark.parametrize(
    "text, spec, canonical",
    [
        ("1bdp", QueueSpec(1, "bdp"), "1bdp"),
        ("0.5bdp", QueueSpec(0.5, "bdp"), "0.5bdp"),
        ("2.5 BDP", QueueSpec(2.5, "bdp"), "2.5bdp"),
        ("100p", QueueSpec(100, "packets"), "100p"),
        ("100pkt", QueueSpec(100, "packets"), "100p"),
        ("100pkts", QueueSpec(100, "packets"), "100p"),
        ("100 packets", QueueSpec(100, "packets"), "100p"),
        ("62500", QueueSpec(62500, "bytes"), "62500B"),
        ("64k", QueueSpec(64000, "bytes"), "64000B"),
        ("64ki", QueueSpec(65536, "bytes"), "65536B"),
        ("1.5m", QueueSpec(1_500_000, "bytes"), "1500000B"),
        ("256kb", QueueSpec(256_000, "bytes"), "256000B"),
    ],
)
def test_parse_queue(text, spec, canonical):
    assert parse_queue(text) == spec
    assert str(spec) == canonical
    assert parse_queue(canonical) == spec


@pytest.mark.parametrize(
    "text, hint",
    [
        ("deep", "a multiple of the BDP (1bdp, 0.5bdp), a packet count (100p) or bytes"),
        ("1.5p", "whole number"), ("0p", "whole number >= 1"), ("0bdp", "above 0"),
        ("-1bdp", "1bdp"),
    ],
)
def test_parse_queue_errors(text, hint):
    with pytest.raises(ValueError) as e:
        parse_queue(text)
    assert hint in str(e.value)


@pytest.mark.parametrize(
    "spec, rate, rtt, mtu, expected",
    [
        (QueueSpec(1, "bdp"), 50_000_000, 0.04, 1500, 250_000),
        (QueueSpec(0.2, "bdp"), 50_000_000, 0.04, 1500, 50_000),
        (QueueSpec(0.3, "bdp"), 10_000_000, 0.1, 1500, 37_500),  # exact, not 37499.99...
        (QueueSpec(8, "bdp"), 10_000_000, 0.04, 1500, 400_000),
        (QueueSpec(1, "bdp"), 10**10, 0.0001, 1500, 125_000),
        (QueueSpec(100, "packets"), 50_000_000, 0.04, 1500, 100 * 1514),
        (QueueSpec(100, "packets"), 50_000_000, 0.0, 9000, 100 * 9014),
        (QueueSpec(62500, "bytes"), 50_000_000, 0.0, 1500, 62500),
    ],
)
def test_queue_to_bytes(spec, rate, rtt, mtu, expected):
    assert spec.to_bytes(rate, rtt, mtu) == expected


def test_queue_to_bytes_errors():
    with pytest.raises(ValueError, match=r"queue 1bdp needs a delay: .*100p"):
        QueueSpec(1, "bdp").to_bytes(50_000_000, 0.0, 1500)
    with pytest.raises(ValueError, match=r"1000B = 1000 B is smaller than one frame \(1514 B"):
        QueueSpec(1000, "bytes").to_bytes(50_000_000, 0.04, 1500)
    with pytest.raises(ValueError, match="smaller than one frame"):
        QueueSpec(0.001, "bdp").to_bytes(10_000_000, 0.001, 1500)  # 1.25 B
    with pytest.raises(ValueError, match="32-bit limit"):
        QueueSpec(1000, "bdp").to_bytes(10**10, 1.0, 1500)


@pytest.mark.parametrize(
    "amount, unit, hint",
    [(1, "frames", "'bdp', 'packets' or 'bytes'"), (0, "bdp", "above 0"),
     (float("nan"), "bdp", "above 0"), (1.5, "packets", "whole number"),
     (True, "packets", "above 0")],
)
def test_queue_spec_errors(amount, unit, hint):
    with pytest.raises(ValueError, match="queue") as e:
        QueueSpec(amount, unit)
    assert hint in str(e.value)


# ---------------------------------------------------------------------------------------------
# LabConfig


def test_defaults():
    c = LabConfig()
    assert c.name == "ut" and c.rate is None and c.queue is None and c.burst_bytes is None
    assert c.senders == (SenderSpec(0.0, 0.0),)
    assert c.rtt == 0 and c.bdp_bytes() is None and c.queue_bytes() is None
    assert c.describe() == "unshaped, no delay, no loss, 1 sender, mtu 1500"
    assert (c.reorder, c.reorder_rev, c.reorder_delay) == (0.0, 0.0, 0.001)


@pytest.mark.parametrize(
    "kw, hint",
    [
        ({"name": "toolongname"}, "1 to 8 ASCII letters or digits"),
        ({"name": "a-b"}, "1 to 8 ASCII letters or digits"),
        ({"name": ""}, "invalid lab name"),
        ({"rate": 500_000}, "rate 500 kbit/s is outside the lab's range, 1 Mbit/s to 10 Gbit/s"),
        ({"rate": 20 * 10**9}, "outside the lab's range"),
        ({"rate": 5e7}, "rate must be an int in bits/s"),
        ({"rate": True}, "rate must be an int"),
        ({"queue": QueueSpec(1, "bdp"), "delay": 0.02}, "need a rate"),
        ({"burst_bytes": 6000}, "need a rate"),
        ({"rate": 10**8, "queue": "1bdp"}, "must be a QueueSpec (see parse_queue"),
        ({"rate": 10**8, "queue": QueueSpec(1, "bdp")}, "queue 1bdp needs a delay"),
        ({"rate": 10**8, "queue": QueueSpec(10, "bytes")}, "smaller than one frame"),
        ({"rate": 10**8, "burst_bytes": 1000}, "burst_bytes must be an int from 1514"),
        ({"rate": 10**8, "burst_bytes": 6000, "mtu": 9000}, "from 9014"),
        ({"delay": 0.6}, "delay must be from 0 to 500ms (seconds as a float), got 600ms"),
        ({"delay": -0.001}, "got -1ms"),
        ({"delay": "20ms"}, "delay must be from 0 to 500ms"),
        ({"delay_rev": 1.0}, "delay_rev must be from 0 to 500ms"),
        ({"loss": 1.0}, "loss must be a fraction from 0 to below 1 (0.001 is 0.1%)"),
        ({"loss_rev": -0.1}, "loss_rev must be a fraction"),
        ({"loss": "1%"}, "loss must be a fraction"),
        ({"loss_seed": 0}, "loss_seed must be an int from 1"),
        ({"loss_seed": 2**64}, "loss_seed must be an int from 1"),
        ({"loss_seed": "7"}, "loss_seed must be an int"),
        ({"reorder": 0.6}, "reorder must be a fraction from 0 to 0.5 (0.01 is 1%; above one half"),
        ({"reorder": 0.5000001}, "reorder must be a fraction from 0 to 0.5"),
        ({"reorder": -0.01}, "reorder must be a fraction from 0 to 0.5"),
        ({"reorder": True}, "reorder must be a fraction"),
        ({"reorder": "1%"}, "reorder must be a fraction"),
        ({"reorder": float("nan")}, "reorder must be a fraction"),
        ({"reorder_rev": 0.51}, "reorder_rev must be a fraction from 0 to 0.5"),
        ({"reorder_rev": -0.1}, "reorder_rev must be a fraction"),
        ({"reorder_rev": False}, "reorder_rev must be a fraction"),
        ({"reorder_delay": 0}, "reorder_delay must be from 10us to 500ms (seconds as a float), "
                               "got 0"),
        ({"reorder_delay": 0.0}, "reorder_delay must be from 10us to 500ms"),
        ({"reorder_delay": 0.000009}, "reorder_delay must be from 10us to 500ms (seconds as a "
                                      "float), got 9us"),
        ({"reorder_delay": 0.6}, "reorder_delay must be from 10us to 500ms (seconds as a float), "
                                 "got 600ms"),
        ({"reorder_delay": -0.001}, "reorder_delay must be from 10us to 500ms"),
        ({"reorder_delay": True}, "reorder_delay must be from 10us to 500ms"),
        ({"reorder_delay": "1ms"}, "reorder_delay must be from 10us to 500ms (seconds as a "
                                   "float), got '1ms'"),
        ({"reorder_delay": float("inf")}, "reorder_delay must be from 10us"),
        ({"senders": 0}, "senders must be an int from 1 to 64"),
        ({"senders": 65}, "from 1 to 64"),
        ({"senders": ()}, "give 1 to 64 senders, got 0"),
        ({"senders": (1, 2)}, "a count (1 to 64) or a tuple of SenderSpec"),
        ({"senders": True}, "a count"),
        ({"mtu": 67}, "mtu must be an int from 68 to 65535"),
        ({"mtu": 70000}, "mtu must be an int"),
        ({"mtu": 1500.0}, "mtu must be an int"),
    ],
)
def test_validation_errors(kw, hint):
    with pytest.raises(ValueError) as e:
        LabConfig(**kw)
    assert hint in str(e.value)


@pytest.mark.parametrize(
    "kw",
    [
        {"reorder": 0}, {"reorder": 0.0}, {"reorder": 0.01}, {"reorder": 0.5},
        {"reorder_rev": 0.5}, {"reorder": 0.5, "reorder_rev": 0.5},
        {"reorder": 0.01, "reorder_delay": 0.00001}, {"reorder": 0.01, "reorder_delay": 0.5},
        {"reorder_delay": 0.2},  # a hold without reordering is unused, not an error
    ],
)
def test_reorder_valid(kw):
    c = LabConfig(**kw)
    for field, value in kw.items():
        assert getattr(c, field) == value and type(getattr(c, field)) is float


def test_reorder_needs_no_delay():
    c = LabConfig(reorder=0.01)
    assert c.delay == 0 and c.rtt == 0 and c.reorder == 0.01
    assert c.describe() == "unshaped, no delay, no loss, reorder 1%/0% (+1ms), 1 sender, mtu 1500"


def test_reorder_delay_is_kept_to_the_nanosecond():
    assert LabConfig(reorder=0.01, reorder_delay=0.001 + 1e-12).reorder_delay == 0.001
    assert LabConfig(reorder_delay=0.1 + 0.2).reorder_delay == 0.3


def test_sender_spec_validates():
    with pytest.raises(ValueError, match="sender delay_rev must be from 0 to 500ms"):
        SenderSpec(0.01, 0.7)
    assert SenderSpec(0.01, 0.04).rtt == 0.05


def test_senders_count_follows_top_level_delays():
    c = LabConfig(delay=0.02, delay_rev=0.005, senders=3)
    assert c.senders == (SenderSpec(0.02, 0.005),) * 3
    assert c.rtt == 0.025
    same = LabConfig(delay=0.01, senders=2)
    assert same.effective_delay_rev == 0.01 and same.senders == (SenderSpec(0.01, 0.01),) * 2


def test_per_sender_delays_are_kept():
    specs = (SenderSpec(0.01, 0.01), SenderSpec(0.04, 0.005))
    c = LabConfig(rate=50_000_000, delay=0.02, senders=list(specs), queue=QueueSpec(1, "bdp"))
    assert c.senders == specs  # a list becomes a tuple: the config stays hashable
    hash(c)
    assert c.rtt == 0.02  # sender 1's
    assert c.queue_bytes() == 125_000
    assert "one-way per sender 10ms+10ms, 40ms+5ms (RTT 20ms, 45ms)" in c.describe()
    assert "2 senders" in c.describe()


def test_delays_are_kept_to_the_nanosecond():
    c = LabConfig(delay=0.1 + 0.2, delay_rev=1e-12)
    assert c.delay == 0.3 and c.delay_rev == 0.0


@pytest.mark.parametrize(
    "kw, rtt, bdp, queue",
    [
        ({"rate": 50_000_000, "delay": 0.02, "queue": QueueSpec(1, "bdp")}, 0.04, 250_000, 250_000),
        ({"rate": 50_000_000, "delay": 0.02, "delay_rev": 0.005}, 0.025, 156_250, None),
        ({"rate": 10_000_000, "delay": 0.05, "queue": QueueSpec(100, "packets")},
         0.1, 125_000, 151_400),
        ({"rate": 10**9, "queue": QueueSpec(64000, "bytes")}, 0.0, 0, 64000),
        ({"delay": 0.02}, 0.04, None, None),
        ({"rate": 10**10, "delay": 0.00005, "queue": QueueSpec(1, "bdp")},
         0.0001, 125_000, 125_000),
    ],
)
def test_rtt_bdp_queue_bytes(kw, rtt, bdp, queue):
    c = LabConfig(**kw)
    assert c.rtt == rtt
    assert c.bdp_bytes() == bdp
    assert c.queue_bytes() == queue


def test_describe():
    c = LabConfig(rate=50_000_000, delay=0.02, queue=QueueSpec(1, "bdp"), loss=0.001, senders=3)
    assert c.describe() == (
        "50 Mbit/s, 20ms+20ms one-way (RTT 40ms), queue 1bdp = 250000 B, loss 0.1%/0%, "
        "3 senders, mtu 1500"
    )
    bytes_queue = LabConfig(rate=10**9, queue=QueueSpec(64000, "bytes"), burst_bytes=6000)
    assert "1 Gbit/s, no delay, queue 64000 B, burst 6000 B" in bytes_queue.describe()
    assert "queue default" in LabConfig(rate=10**9).describe()


@pytest.mark.parametrize(
    "kw, part",
    [
        ({"reorder": 0.01}, "reorder 1%/0% (+1ms)"),
        ({"reorder_rev": 0.005}, "reorder 0%/0.5% (+1ms)"),
        ({"reorder": 0.5, "reorder_rev": 0.02, "reorder_delay": 0.00015},
         "reorder 50%/2% (+150us)"),
        ({"reorder": 0.001, "reorder_delay": 0.5}, "reorder 0.1%/0% (+500ms)"),
    ],
)
def test_describe_reorder(kw, part):
    c = LabConfig(rate=50_000_000, delay=0.02, loss=0.001, **kw)
    assert c.describe() == (
        f"50 Mbit/s, 20ms+20ms one-way (RTT 40ms), queue default, loss 0.1%/0%, {part}, "
        f"1 sender, mtu 1500"
    )
    assert f"no loss, {part}, 1 sender" in LabConfig(**kw).describe()


def test_describe_without_reorder_leaves_it_out():
    assert "reorder" not in WAN.describe()
    # a hold with both fractions 0 reorders nothing, so it is not mentioned
    c = LabConfig(reorder_delay=0.005)
    assert c.describe() == "unshaped, no delay, no loss, 1 sender, mtu 1500"


@pytest.mark.parametrize(
    "config",
    [
        LabConfig(),
        WAN,
        LabConfig(name="lab2", rate=1_234_567, delay=0.0123, delay_rev=0.0004, loss=0.005,
                  loss_rev=0.0001, senders=5, mtu=9000, burst_bytes=20000,
                  queue=QueueSpec(30.5, "bdp")),
        LabConfig(rate=2_000_000, queue=QueueSpec(30, "packets"), delay=0.1 + 0.2),
        LabConfig(rate=10**10, queue=QueueSpec(65536, "bytes"), delay=0.00005),
        LabConfig(delay=0.02, senders=(SenderSpec(0.01, 0.02), SenderSpec(0.5, 0.0))),
        LabConfig(delay=0.02, delay_rev=0.02),  # an explicit delay_rev stays explicit
        LabConfig(reorder=0.01),
        LabConfig(reorder=0.5, reorder_rev=0.5, reorder_delay=0.5),
        LabConfig(reorder=0.0123, reorder_rev=0.0001, reorder_delay=0.00001),
        LabConfig(rate=50_000_000, delay=0.02, reorder_rev=0.03, reorder_delay=0.0001234567),
        LabConfig(reorder_delay=0.25),  # an unused hold still round-trips
        LabConfig(reorder=0.1 + 0.2, reorder_delay=0.1 + 0.2),
        LabConfig(loss=0.005, loss_seed=2**64 - 1),
    ],
)
def test_to_dict_from_dict_round_trip(config):
    d = config.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert LabConfig.from_dict(d) == config


def test_to_dict_form():
    assert WAN.to_dict() == {
        "name": "ut", "rate": "50mbit", "queue": "1bdp", "delay": "20ms", "loss": "0%",
        "loss_rev": "0%", "reorder": "0%", "reorder_rev": "0%", "reorder_delay": "1ms",
        "mtu": 1500, "senders": 1,
    }
    reordering = LabConfig(reorder=0.01, reorder_rev=0.005, reorder_delay=0.00015).to_dict()
    assert (reordering["reorder"], reordering["reorder_rev"], reordering["reorder_delay"]) == (
        "1%", "0.5%", "150us",
    )
    per_sender = LabConfig(senders=(SenderSpec(0.01, 0.01), SenderSpec(0.04, 0.005)))
    assert per_sender.to_dict()["sender"] == [
        {"delay": "10ms", "delay_rev": "10ms"}, {"delay": "40ms", "delay_rev": "5ms"},
    ]
    assert "senders" not in per_sender.to_dict()


def test_from_dict_accepts_numbers_where_unambiguous():
    c = LabConfig.from_dict({"rate": 50_000_000, "queue": 62500, "burst": 6000, "delay": 0,
                             "loss": 0, "mtu": 1400, "senders": 2})
    assert c == LabConfig(rate=50_000_000, queue=QueueSpec(62500, "bytes"), burst_bytes=6000,
                          mtu=1400, senders=2)


@pytest.mark.parametrize(
    "d, hint",
    [
        ({"dealy": "20ms"}, "cfg.toml: unknown key 'dealy' (known keys: burst, delay,"),
        ({"delay": "20"}, "cfg.toml: delay: invalid time '20': add a unit"),
        ({"delay": 20}, "cfg.toml: delay: invalid time '20': add a unit"),
        ({"delay": True}, 'cfg.toml: delay: expected a string like "20ms"'),
        ({"loss": 0.01}, "cfg.toml: loss: invalid percentage '0.01'"),
        ({"reorder": 0.01}, "cfg.toml: reorder: invalid percentage '0.01'"),
        ({"reorder": "1"}, "cfg.toml: reorder: invalid percentage '1': a bare number"),
        ({"reorder": True}, 'cfg.toml: reorder: expected a string like "1%"'),
        ({"reorder": ["1%"]}, 'cfg.toml: reorder: expected a string like "1%"'),
        ({"reorder": "60%"}, "cfg.toml: reorder must be a fraction from 0 to 0.5"),
        ({"reorder_rev": "often"}, "cfg.toml: reorder_rev: invalid percentage 'often'"),
        ({"reorder_rev": "51%"}, "cfg.toml: reorder_rev must be a fraction from 0 to 0.5"),
        ({"reorder_delay": "2"}, "cfg.toml: reorder_delay: invalid time '2': add a unit"),
        ({"reorder_delay": 2}, "cfg.toml: reorder_delay: invalid time '2': add a unit"),
        ({"reorder_delay": False}, 'cfg.toml: reorder_delay: expected a string like "1ms"'),
        ({"reorder_delay": "0"}, "cfg.toml: reorder_delay must be from 10us to 500ms"),
        ({"reorder_delay": "1s"}, "cfg.toml: reorder_delay must be from 10us to 500ms"),
        ({"reorder_delay": "5us"}, "cfg.toml: reorder_delay must be from 10us to 500ms"),
        ({"reorde": "1%"}, "cfg.toml: unknown key 'reorde' (known keys: "),
        ({"rate": "50mbps"}, "cfg.toml: rate: invalid rate '50mbps'"),
        ({"rate": 5e7}, 'cfg.toml: rate: expected a string like "50mbit" or an int'),
        ({"rate": "50mbit", "queue": "deep"}, "cfg.toml: queue: invalid queue 'deep'"),
        ({"rate": "50mbit", "burst": "big"}, "cfg.toml: burst: invalid size 'big'"),
        ({"mtu": "1500"}, "cfg.toml: mtu: expected an int like 1500"),
        ({"name": 7}, "cfg.toml: name: expected a string"),
        ({"senders": "3"}, "cfg.toml: senders: expected a count like 3"),
        ({"rate": "100gbit"}, "cfg.toml: rate 100 Gbit/s is outside the lab's range"),
        ({"queue": "1bdp"}, "cfg.toml: queue and burst shape the bottleneck, so they need a rate"),
        ({"senders": 2, "sender": [{}]}, "cfg.toml: give either `senders = N` or [[sender]]"),
        ({"sender": {"delay": "1ms"}}, "cfg.toml: sender: write one [[sender]] table"),
        ({"sender": [{}, {"dealy": "1ms"}]}, "cfg.toml: sender #2: unknown key 'dealy'"),
        ({"sender": [{"delay": "1"}]}, "cfg.toml: sender #1: delay: invalid time '1'"),
        ({"sender": [{"delay": "1s"}]}, "cfg.toml: sender #1: sender delay must be from 0 to"),
        ([("rate", "1gbit")], "cfg.toml: expected a table of settings"),
    ],
)
def test_from_dict_errors(d, hint):
    with pytest.raises(ValueError) as e:
        LabConfig.from_dict(d, source="cfg.toml")
    assert hint in str(e.value)


def test_replace():
    c = WAN.replace(rate=10_000_000, queue=None, loss=0.01, burst_bytes=None)
    assert c.rate == 10_000_000 and c.queue == QueueSpec(1, "bdp") and c.loss == 0.01
    assert c.queue_bytes() == 50_000  # "1bdp" follows the new rate
    assert WAN.replace() == WAN


def test_replace_moves_following_senders_but_keeps_own_delays():
    three = LabConfig(delay=0.02, senders=3).replace(delay=0.05)
    assert three.senders == (SenderSpec(0.05, 0.05),) * 3
    own = LabConfig(delay=0.02, senders=(SenderSpec(0.01, 0.01), SenderSpec(0.04, 0.04)))
    assert own.replace(delay=0.05).senders == own.senders
    assert own.replace(senders=2).senders == (SenderSpec(0.02, 0.02),) * 2


def test_replace_reorder():
    c = WAN.replace(reorder=0.01, reorder_rev=None, reorder_delay=None)
    assert (c.reorder, c.reorder_rev, c.reorder_delay) == (0.01, 0.0, 0.001)
    c = c.replace(reorder_rev=0.02, reorder_delay=0.003)
    assert (c.reorder, c.reorder_rev, c.reorder_delay) == (0.01, 0.02, 0.003)
    assert c.replace(reorder=0.0).reorder == 0.0  # 0 is "given", unlike None
    with pytest.raises(ValueError, match="reorder_delay must be from 10us to 500ms"):
        c.replace(reorder_delay=0.0)
    with pytest.raises(ValueError, match="reorder must be a fraction from 0 to 0.5"):
        c.replace(reorder=0.75)


def test_replace_errors():
    with pytest.raises(ValueError, match="unknown setting 'queue_bytes'; known: burst_bytes"):
        WAN.replace(queue_bytes=100_000)
    with pytest.raises(ValueError, match="rate .* outside the lab's range"):
        WAN.replace(rate=1)


# ---------------------------------------------------------------------------------------------
# TOML files

GOOD_TOML = """\
name = "wan"
rate = "50mbit"
delay = "20ms"
delay_rev = "5ms"
queue = "1bdp"
burst = "6k"
loss = "0.1%"
loss_rev = "0%"
mtu = 1500
senders = 3
"""


def write(tmp_path, text):
    path = tmp_path / "lab.toml"
    path.write_text(text)
    return path


def test_from_toml(tmp_path):
    c = LabConfig.from_toml(write(tmp_path, GOOD_TOML))
    assert c == LabConfig(name="wan", rate=50_000_000, delay=0.02, delay_rev=0.005,
                          queue=QueueSpec(1, "bdp"), burst_bytes=6000, loss=0.001, senders=3)
    assert c.queue_bytes() == 156_250


def test_from_toml_reorder(tmp_path):
    path = write(tmp_path, 'delay = "20ms"\nreorder = "1%"\nreorder_rev = "0.5%"\n'
                           'reorder_delay = "2ms"\n')
    c = LabConfig.from_toml(path)
    assert (c.reorder, c.reorder_rev, c.reorder_delay) == (0.01, 0.005, 0.002)
    assert c == LabConfig(delay=0.02, reorder=0.01, reorder_rev=0.005, reorder_delay=0.002)
    bounds = write(tmp_path, 'reorder = "50%"\nreorder_delay = "10us"\n')
    c = LabConfig.from_toml(bounds)
    assert (c.reorder, c.reorder_delay) == (0.5, 0.00001)
    assert LabConfig.from_toml(write(tmp_path, 'reorder = "0"\n')) == LabConfig()


def test_unknown_keys_lists_reorder_keys():
    with pytest.raises(ValueError) as e:
        LabConfig.from_dict({"reordering": "1%"}, source="cfg.toml")
    assert "unknown key 'reordering'" in str(e.value)
    assert "reorder, reorder_delay, reorder_rev" in str(e.value)


def test_from_toml_per_sender_tables(tmp_path):
    path = write(tmp_path, """\
rate = "50mbit"
delay = "20ms"
[[sender]]
[[sender]]
delay = "10ms"
[[sender]]
delay = "40ms"
delay_rev = "5ms"
""")
    assert LabConfig.from_toml(path).senders == (
        SenderSpec(0.02, 0.02), SenderSpec(0.01, 0.01), SenderSpec(0.04, 0.005),
    )
    with_rev = write(tmp_path, 'delay = "20ms"\ndelay_rev = "1ms"\n[[sender]]\ndelay = "10ms"\n')
    assert LabConfig.from_toml(with_rev).senders == (SenderSpec(0.01, 0.001),)


@pytest.mark.parametrize(
    "text, hint",
    [
        ('rate = "50mbit"\nqueue_size = "1bdp"\n', "unknown key 'queue_size'"),
        ('rate = "50mbit"\ndelay = "20"\n', "delay: invalid time '20': add a unit"),
        ('senders = 2\n[[sender]]\ndelay = "1ms"\n', "give either `senders = N` or [[sender]]"),
        ('[[sender]]\ndelay = "1ms"\nloss = "1%"\n', "sender #1: unknown key 'loss'"),
        ('[[sender]]\nreorder = "1%"\n', "sender #1: unknown key 'reorder'"),
        ('reorder = "1%"\nreorder_delay = "0.6s"\n', "reorder_delay must be from 10us to 500ms"),
        ('rate = 50mbit\n', "invalid TOML"),
    ],
)
def test_from_toml_errors_name_file_and_key(tmp_path, text, hint):
    path = write(tmp_path, text)
    with pytest.raises(ValueError) as e:
        LabConfig.from_toml(path)
    assert str(e.value).startswith(f"{path}: ")
    assert hint in str(e.value)


def test_from_toml_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        LabConfig.from_toml(tmp_path / "nope.toml")


# ---------------------------------------------------------------------------------------------
# Presets

REQUIRED_PRESETS = {
    "wan-50m-40ms": (50_000_000, 0.04, 250_000),
    "wan-1g-40ms": (10**9, 0.04, 5_000_000),
    "wan-10m-100ms": (10_000_000, 0.1, 125_000),
    "lossy-50m-40ms": (50_000_000, 0.04, 250_000),
    "shallow-50m-40ms": (50_000_000, 0.04, 50_000),
    "bloated-10m-40ms": (10_000_000, 0.04, 400_000),
    "satellite-20m-600ms": (20_000_000, 0.6, 1_500_000),
    "intercontinental-100m-150ms": (100_000_000, 0.15, 1_875_000),
    "dc-10g-100us": (10**10, 0.0001, 125_000),
    "unshaped-40ms": (None, 0.04, None),
}


@pytest.mark.parametrize("name", sorted(REQUIRED_PRESETS))
def test_required_presets(name):
    rate, rtt, queue = REQUIRED_PRESETS[name]
    c = preset(name)
    assert (c.rate, c.rtt, c.queue_bytes()) == (rate, rtt, queue)
    assert c.delay == c.effective_delay_rev == rtt / 2


def test_lossy_preset_loses_data_only():
    c = preset("lossy-50m-40ms")
    assert (c.loss, c.loss_rev) == (0.005, 0.0)


@pytest.mark.parametrize("name", sorted(presets()))
def test_every_preset(name):
    description, config = presets()[name]
    assert description and "\n" not in description
    assert config.name == "ut"  # the lab name comes from the command line, not the preset
    line = config.describe()
    assert line and "\n" not in line
    assert LabConfig.from_dict(config.to_dict()) == config
    assert preset(name) == config


def test_preset_overrides():
    c = preset("wan-50m-40ms", name="lab2", delay=0.05, rate=None, senders=2)
    assert c.name == "lab2" and c.rate == 50_000_000 and c.rtt == 0.1
    assert c.senders == (SenderSpec(0.05, 0.05),) * 2
    assert c.queue_bytes() == 625_000  # 1 BDP of the new RTT


def test_preset_reorder_overrides():
    c = preset("wan-50m-40ms", reorder=0.01, reorder_delay=0.002)
    assert (c.rate, c.rtt, c.reorder, c.reorder_rev, c.reorder_delay) == (
        50_000_000, 0.04, 0.01, 0.0, 0.002,
    )
    assert "no loss, reorder 1%/0% (+2ms), 1 sender" in c.describe()
    assert preset("wan-50m-40ms", reorder=None) == preset("wan-50m-40ms")


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown preset 'wan-5g'; known presets: ") as e:
        preset("wan-5g")
    assert "wan-50m-40ms" in str(e.value) and "dc-10g-100us" in str(e.value)


def test_presets_returns_a_copy():
    presets().clear()
    assert "wan-50m-40ms" in presets()


def test_import_does_not_load_pyroute2():
    code = "import sys, netns.config; print('pyroute2' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------------------------------
# `usertcp lab up` flags (parsed only: building a lab needs root and is tested in test_lab.py)


def lab_up_args(*argv: str) -> argparse.Namespace:
    from netns.cli import register

    parser = argparse.ArgumentParser(prog="usertcp")
    register(parser.add_subparsers())
    return parser.parse_args(["lab", "up", *argv])


def test_cli_reorder_flags():
    from netns.cli import config_from_args

    args = lab_up_args("--reorder", "1%", "--reorder-rev", "0.5%", "--reorder-delay", "2ms")
    assert (args.reorder, args.reorder_rev, args.reorder_delay) == (0.01, 0.005, 0.002)
    c = config_from_args(args)
    assert (c.reorder, c.reorder_rev, c.reorder_delay) == (0.01, 0.005, 0.002)
    assert c.delay == 0  # reordering needs no delay
    assert config_from_args(lab_up_args()) == LabConfig()  # not given: the defaults


def test_cli_reorder_flags_override_a_preset_and_a_file(tmp_path):
    from netns.cli import config_from_args

    c = config_from_args(lab_up_args("--preset", "wan-50m-40ms", "--reorder", "1%"))
    assert c == preset("wan-50m-40ms", reorder=0.01)
    assert c.reorder_delay == 0.001 and c.reorder_rev == 0.0
    path = write(tmp_path, 'delay = "20ms"\nreorder = "2%"\nreorder_rev = "1%"\n'
                           'reorder_delay = "5ms"\n')
    from_file = config_from_args(lab_up_args("-c", str(path)))
    assert (from_file.reorder, from_file.reorder_rev, from_file.reorder_delay) == (
        0.02, 0.01, 0.005,
    )
    c = config_from_args(
        lab_up_args("-c", str(path), "--reorder-rev", "0%", "--reorder-delay", "150us")
    )
    assert (c.reorder, c.reorder_rev, c.reorder_delay) == (0.02, 0.0, 0.00015)


@pytest.mark.parametrize(
    "argv, hint",
    [
        (("--reorder", "1"), "invalid percentage '1': a bare number is ambiguous"),
        (("--reorder-rev", "lots"), "invalid percentage 'lots'"),
        (("--reorder-delay", "2"), "invalid time '2': add a unit"),
    ],
)
def test_cli_reorder_flag_parse_errors(capsys, argv, hint):
    with pytest.raises(SystemExit) as e:
        lab_up_args(*argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {argv[0]}" in err and hint in err


@pytest.mark.parametrize(
    "argv, hint",
    [
        (("--reorder", "60%"), "reorder must be a fraction from 0 to 0.5"),
        (("--reorder-rev", "50.1%"), "reorder_rev must be a fraction from 0 to 0.5"),
        (("--reorder-delay", "0"), "reorder_delay must be from 10us to 500ms"),
        (("--reorder", "1%", "--reorder-delay", "1s"), "reorder_delay must be from 10us to 500ms"),
    ],
)
def test_cli_reorder_flag_range_errors(argv, hint):
    from netns.cli import config_from_args

    with pytest.raises(ValueError, match=hint):
        config_from_args(lab_up_args("--preset", "wan-50m-40ms", *argv))


def test_cli_reorder_help(capsys):
    with pytest.raises(SystemExit):
        lab_up_args("--help")
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines at the terminal width
    assert "--reorder PCT" in text and "--reorder-rev PCT" in text
    assert "--reorder-delay TIME" in text and "(default: 1ms)" in text
    assert "held back by --reorder-delay so later ones overtake them: 1%" in text


def test_reorder_warning_above_the_measured_per_packet_rate():
    from netns.lab import REORDER_RATE_LIMIT, reorder_warning

    assert reorder_warning(LabConfig(rate=50_000_000, delay=0.01)) is None
    assert reorder_warning(LabConfig(rate=REORDER_RATE_LIMIT, reorder=0.01)) is None
    fast = reorder_warning(LabConfig(rate=REORDER_RATE_LIMIT + 1, reorder_rev=0.01))
    assert fast and "per MTU-sized packet" in fast and "100 Mbit/s" in fast
    assert "without a rate limit" in reorder_warning(LabConfig(reorder=0.01))


def test_loss_seed_is_described():
    assert "loss 0.5%/0% (seed 7)" in LabConfig(loss=0.005, loss_seed=7).describe()
