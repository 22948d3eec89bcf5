"""Faults found by QA (H9) in filtering-list input, each pinned by a test.

- `allow add LON fe80::1%eth0` was accepted and published as
  `fe80::1%eth0/128`: an IPv6 zone index names an interface of the machine
  that typed it, never matches a peer, and Postfix refuses it in mynetworks.
- Every store upgrade (each `serve` start, in serve and in the control
  process) logged about ten alembic INFO lines ("setup plugin ...").
"""

from __future__ import annotations

import pytest

from tlsrelay.control import lists
from tlsrelay.control.errors import Invalid


@pytest.mark.parametrize("text", ["fe80::1%eth0", "2001:db8::5%1", "fe80::%lo/64"])
def test_zone_index_is_refused_with_a_precise_message(text):
    with pytest.raises(Invalid, match="leave out the zone index"):
        lists.parse_network(text)


def test_address_without_zone_index_still_parses():
    assert str(lists.parse_network("fe80::1")) == "fe80::1/128"


def test_store_upgrade_logs_no_alembic_chatter(settings, caplog):
    # QA: every `serve` start printed ~10 alembic INFO lines, twice.
    import logging

    from tlsrelay.control import db

    logging.getLogger("alembic").setLevel(logging.NOTSET)
    with caplog.at_level(logging.INFO):
        db.upgrade(settings)
    assert not [r for r in caplog.records if r.name.startswith("alembic")]
    assert any("newest schema" in r.getMessage() for r in caplog.records)
