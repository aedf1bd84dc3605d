"""`mta-lab bench decode` on a CPU (tiny models, eager decoding): the report's rows and ratios, graph mode marked
as needing CUDA, bad options refused before any model is built."""

from __future__ import annotations

import json

import pytest

from mta_lab.cli import main

TINY = ["model=tiny", "contexts=16,24", "batches=1,2", "new_tokens=8"]


def test_report_has_a_row_per_setting_with_ratios_to_the_transformer(tmp_path):
    assert main(["bench", "decode", *TINY, "attention=transformer,mta", "modes=eager,graph", f"out={tmp_path}",
                 "tag=d"]) == 0
    rows = json.loads((tmp_path / "d.json").read_text())["results"]
    assert len(rows) == 2 * 2 * 2 * 2
    eager = [r for r in rows if r["mode"] == "eager"]
    assert all(r["prefill_ms"] > 0 and r["cache_gib"] > 0 for r in eager)
    # A busy CPU can make the 2N-minus-N difference meaningless: such a row says so instead of giving a time.
    assert all(r["ms_per_token"] > 0 if r["status"] == "ok" else r["status"].startswith("noisy:") for r in eager)
    assert sum(r["status"] == "ok" for r in eager) >= len(eager) // 2
    assert all(r["status"] == "needs CUDA" and r["ms_per_token"] is None for r in rows if r["mode"] == "graph")
    table = (tmp_path / "d.md").read_text()
    for r in eager:
        base = next(b for b in eager if b["attention"] == "transformer" and b["batch_size"] == r["batch_size"]
                    and b["context"] == r["context"])
        if r["status"] == base["status"] == "ok":
            ratio = r["ms_per_token"] / base["ms_per_token"]
            assert f"| {r['ms_per_token']:.2f} | {ratio:.2f}x |" in table
    assert "| tiny | mta | eager | 2 | 24 |" in (tmp_path / "d.md").read_text()


@pytest.mark.parametrize(("option", "message"), [
    ("contexts=0", "contexts='0': expected a comma-separated list of positive integers"),
    ("modes=eager,jit", "modes: unknown 'jit'; use some of"),
    ("new_tokens=0", "new_tokens=0: expected a positive integer"),
    ("prefill_chunk=0", "prefill_chunk=0: expected a positive integer"),
    ("attention=nope", "nope"),
])
def test_bad_options_are_one_message_and_write_nothing(tmp_path, capsys, option, message):
    assert main(["bench", "decode", "model=tiny", option, f"out={tmp_path}", "tag=bad"]) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
