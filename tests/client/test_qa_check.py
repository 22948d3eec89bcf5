"""Faults found by QA (H9) in `tlsrelay client check`, each pinned by a test.

- A transport line with two faults, `a.example smtp:[relay:587]  # note`,
  got only `map-trailing-comment`, whose fix line kept the port inside the
  brackets (`a.example smtp:[relay:587]`): following the fix left a broken
  route.  Now the rest of the line is checked too and the fix is right.
"""

from __future__ import annotations

from test_check_config import RELAY, config_findings, faults


def test_trailing_comment_fix_also_repairs_the_rest_of_the_line(debian_tree):
    transport = debian_tree.write_map(
        "transport", "a.example smtp:[relay.example.net:587]  # to the relay"
    )
    debian_tree.append(
        "relayhost = " + RELAY,
        "smtp_tls_security_level = encrypt",
        f"transport_maps = hash:{transport}",
    )
    found = config_findings(debian_tree, None)
    where = f"{transport}:1"
    assert faults(found) == [
        ("error", "map-trailing-comment", where),
        ("error", "port-in-brackets", where),
    ]
    assert {f.fix for f in found if f.severity != "ok"} == {f"a.example smtp:{RELAY}"}
