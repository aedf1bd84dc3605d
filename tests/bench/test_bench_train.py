"""`mta-lab bench train` on a CPU (tiny model): report files, PRESET@BACKEND labels, partial saves, bad input."""

from __future__ import annotations

import json

import pytest

from mta_lab.bench import train_bench
from mta_lab.cli import main

TINY = ["model=tiny", "batch_size=1", "seq_len=32", "steps=1", "warmup=0"]


def test_report_has_a_row_per_config_and_pins_backends(tmp_path):
    assert main(["bench", "train", *TINY, "attention=transformer,t5_kq_6x11@eager", f"out={tmp_path}",
                 "tag=t"]) == 0
    payload = json.loads((tmp_path / "t.json").read_text())
    rows = {r["attention"]: r for r in payload["results"]}
    assert set(rows) == {"transformer", "t5_kq_6x11@eager"}
    assert all(r["status"] == "ok" and r["tokens_per_s"] > 0 for r in rows.values())
    assert "| tiny | t5_kq_6x11@eager |" in (tmp_path / "t.md").read_text()
    # What the layers ran: the kq layer (every 4th from 2: one of tiny's four) the pinned eager op, the rest SDPA.
    assert rows["t5_kq_6x11@eager"]["backends"] == "sdpa (3 layers), eager (1 layer)"
    assert rows["transformer"]["backends"] is None
    assert train_bench.attention_spec("t5_kq_6x11@stacked").backend == "stacked"
    assert train_bench.attention_spec("t5_kq_6x11").backend == "auto"


def test_a_run_cut_short_keeps_the_configs_it_measured(tmp_path, monkeypatch):
    measured = train_bench.bench_one

    def stop_at_the_second(model, attention, **kwargs):
        if attention == "mta":
            raise KeyboardInterrupt  # what a time limit's SIGINT does
        return measured(model, attention, **kwargs)

    monkeypatch.setattr(train_bench, "bench_one", stop_at_the_second)
    with pytest.raises(KeyboardInterrupt):
        main(["bench", "train", *TINY, "attention=transformer,mta", f"out={tmp_path}", "tag=cut"])
    rows = json.loads((tmp_path / "cut.json").read_text())["results"]
    assert [r["attention"] for r in rows] == ["transformer"]


@pytest.mark.parametrize(("attention", "message"), [("transformer@nope", "attention.backend='nope'"),
                                                    ("nope", "nope")])
def test_bad_attention_is_one_clear_error_before_any_work(tmp_path, attention, message, capsys):
    assert main(["bench", "train", *TINY, f"attention={attention}", f"out={tmp_path}"]) == 2
    assert message in " ".join(capsys.readouterr().err.split())
    assert not list(tmp_path.iterdir())
