"""scripts/soak with small counts: no crash, no hang, no wrong reply, and no memory growth to speak of."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

RSS_GROWTH_MIB = 20  # the server idles at ~40 MiB; a leak per packet or per connection shows up well above this


def test_soak_small(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "soak"), "--cycles", "50", "--packets", "20000", "--rss-every",
         "0.2", "--json", str(out)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    report = run.stdout + run.stderr
    assert run.returncode == 0, report
    figures = json.loads(out.read_text())
    assert figures["cycles"] == 50 and figures["packets"] == 20000 == figures["replies_checked"], report
    assert figures["crashes"] == figures["hangs"] == figures["errors"] == 0, report
    assert figures["rss_start"] > 0 and len(figures["rss_kib"]) >= 2, report
    assert figures["rss_growth_mib"] < RSS_GROWTH_MIB, report
    assert "packets/s" in run.stdout
