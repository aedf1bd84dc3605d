"""Text corpora from local files: formats, domains, SlimPajama layout, packing, cache, split, bad inputs."""

from __future__ import annotations

import gzip
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mta_lab.data import DataConfig, DataConfigError, build_data
from mta_lab.data.packing import split_point
from mta_lab.data.tokenizers import ByteTokenizer

EOS = ByteTokenizer.eos_id


def write_jsonl(path, texts, field="text", **extra):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({field: t, **extra}) + "\n" for t in texts))
    return str(path)


def packed(bundle, domain) -> list[int]:
    return bundle.tokens(domain).tolist()


def docs_tokens(*texts: str) -> list[int]:
    return [t for text in texts for t in [*text.encode(), EOS]]


def files_config(tmp_path, domains, **kwargs):
    return DataConfig(corpus="files", domains=domains, cache_dir=str(tmp_path / "cache"), **kwargs)


def test_txt_jsonl_parquet_domains(tmp_path):
    (tmp_path / "a.txt").write_text("First play.\nSecond line.\n")
    (tmp_path / "b.md").write_text("Émile's café")
    write_jsonl(tmp_path / "c.jsonl", ["row one", "", "row two"], field="content", meta={"x": 1})
    with gzip.open(tmp_path / "d.jsonl.gz", "wt") as f:
        f.write(json.dumps({"content": "zipped"}) + "\n")
    pq.write_table(pa.table({"content": ["pq one", None, "pq two"], "id": [1, 2, 3]}), tmp_path / "e.parquet")
    config = files_config(
        tmp_path,
        {"plays": [str(tmp_path / "b.md"), str(tmp_path / "*.txt")], "rows": [str(tmp_path / "c.jsonl"),
         str(tmp_path / "d.jsonl.gz"), str(tmp_path / "e.parquet")]},
        text_field="content", val_fraction=0.2,
    )
    bundle = build_data(config, seq_len=4)
    assert packed(bundle, "plays") == docs_tokens("Émile's café", "First play.\nSecond line.\n")  # list order
    assert packed(bundle, "rows") == docs_tokens("row one", "row two", "zipped", "pq one", "pq two")  # empties skipped
    info = bundle.info["domains"]
    assert info["rows"]["documents"] == 5 and info["plays"]["documents"] == 2
    assert info["rows"]["tokens"] == len(docs_tokens("row one", "row two", "zipped", "pq one", "pq two"))
    assert set(bundle.val_batches(2)) == {"plays", "rows"}


def test_directory_and_recursive_glob(tmp_path):
    write_jsonl(tmp_path / "web" / "b" / "2.jsonl", ["two"])
    write_jsonl(tmp_path / "web" / "a" / "1.jsonl", ["one " * 10])
    for domains in ({"web": [str(tmp_path / "web")]}, {"web": [str(tmp_path / "web" / "**" / "*.jsonl")]}):
        bundle = build_data(files_config(tmp_path, domains, val_fraction=0.3), seq_len=2)
        assert packed(bundle, "web") == docs_tokens("one " * 10, "two")  # sorted paths


def test_slimpajama_layout_with_source_weights(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "slim"
    for source, letter in (("arxiv", "a"), ("github", "g"), ("wiki", "w")):
        for chunk in range(2):
            texts = [letter * int(rng.integers(50, 150)) for _ in range(20)]
            write_jsonl(root / source / f"chunk_{chunk}.jsonl", texts, meta={"redpajama_set_name": source})
    (root / ".hidden").mkdir()
    weights = {"arxiv": 3.0, "github": 1.0, "wiki": 0.0}
    config = DataConfig(corpus="slimpajama", path=str(root), source_weights=weights, cache_dir=str(tmp_path / "c"))
    bundle = build_data(config, seq_len=16)
    assert list(bundle.info["domains"]) == ["arxiv", "github", "wiki"]
    assert [d["weight"] for d in bundle.info["domains"].values()] == [0.75, 0.25, 0.0]
    counts = {"a": 0, "g": 0, "w": 0}
    for step in range(100):
        for row in bundle.train_batch(step, 16, seed=0)["tokens"]:
            counts[chr(int(row[row < 256][0]))] += 1  # the domain's letter (a window may start at an EOS)
    total = sum(counts.values())
    assert counts["w"] == 0 and 0.70 < counts["a"] / total < 0.80
    with pytest.raises(DataConfigError, match=r"data\.source_weights=.*no weight for wiki; give one weight per domain"):
        build_data(DataConfig(corpus="slimpajama", path=str(root), source_weights={"arxiv": 1, "github": 1},
                              cache_dir=str(tmp_path / "c")), seq_len=16)


def test_cache_hit_on_second_load_and_rebuild_on_change(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("hello world, " * 20)
    config = files_config(tmp_path, {"d": [str(path)]})
    first = build_data(config, seq_len=8)
    cache_file = first.info["domains"]["d"]["cache_file"]
    assert first.info["domains"]["d"]["cache"] == "built"
    stamp = os.stat(cache_file).st_mtime_ns
    second = build_data(config, seq_len=8)
    assert second.info["domains"]["d"]["cache"] == "hit" and os.stat(cache_file).st_mtime_ns == stamp
    assert second.fingerprint == first.fingerprint
    # A changed val_fraction reuses the cache (the split is an offset); a changed file does not.
    assert build_data(files_config(tmp_path, {"d": [str(path)]}, val_fraction=0.5), seq_len=8).info["domains"]["d"][
        "cache"] == "hit"
    path.write_text("changed text, " * 20)
    third = build_data(config, seq_len=8)
    assert third.info["domains"]["d"]["cache"] == "built" and third.fingerprint != first.fingerprint
    assert packed(third, "d") == docs_tokens("changed text, " * 20)


def test_fingerprint_follows_content_not_location(tmp_path):
    for sub in ("x", "y"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "a.txt").write_text("same text " * 20)
    a = build_data(files_config(tmp_path, {"d": [str(tmp_path / "x" / "a.txt")]}), seq_len=8)
    b = build_data(files_config(tmp_path, {"d": [str(tmp_path / "y" / "a.txt")]}), seq_len=8)
    c = build_data(files_config(tmp_path, {"d": [str(tmp_path / "y" / "a.txt")]}, val_fraction=0.1), seq_len=8)
    assert a.fingerprint == b.fingerprint != c.fingerprint


def test_split_is_the_tail_of_each_domain_and_windows_stay_inside(tmp_path):
    rng = np.random.default_rng(1)
    text = "".join(rng.choice(list("abcdefghij"), 1999))
    (tmp_path / "a.txt").write_text(text)
    bundle = build_data(files_config(tmp_path, {"d": [str(tmp_path / "a.txt")]}, val_fraction=0.1), seq_len=10)
    tokens = np.array(packed(bundle, "d"))
    cut = split_point(2000, 0.1)
    assert cut == 1800 and bundle.info["domains"]["d"]["train_tokens"] == 1800
    assert bundle.info["domains"]["d"]["train_windows"] == 179 and bundle.info["domains"]["d"]["val_windows"] == 19
    starts = {tokens[s : s + 11].tobytes(): s for s in range(0, 2000 - 10)}
    val = np.concatenate([b["tokens"].numpy() for b in bundle.val_batches(7)["d"]])
    assert [starts[w.tobytes()] for w in val] == [1800 + 10 * i for i in range(19)]
    seen = [starts[w.tobytes()] for s in range(179) for w in bundle.train_batch(s, 1, seed=5)["tokens"].numpy()]
    assert sorted(seen) == [10 * i for i in range(179)]  # one epoch: every training window once, none past the cut


def test_train_batch_purity_resume_and_rank_disjointness(tmp_path):
    rng = np.random.default_rng(2)
    for name in ("x", "y"):
        (tmp_path / f"{name}.txt").write_text("".join(rng.choice(list("abcdefghijklmnop"), 3000)))
    domains = {"x": [str(tmp_path / "x.txt")], "y": [str(tmp_path / "y.txt")]}
    for weights in (None, {"x": 1.0, "y": 2.0}):
        config = files_config(tmp_path, domains, source_weights=weights)
        bundle, resumed = build_data(config, seq_len=16), build_data(config, seq_len=16)
        run = [bundle.train_batch(s, 4, seed=9)["tokens"] for s in range(12)]
        assert all((resumed.train_batch(s, 4, seed=9)["tokens"] == run[s]).all() for s in range(6, 12))
        assert not (bundle.train_batch(0, 4, seed=10)["tokens"] == run[0]).all()
        for step in (0, 7, 40):
            ranks = [bundle.train_batch(step, 4, seed=9, rank=r, world_size=3)["tokens"] for r in range(3)]
            rows = [r.numpy().tobytes() for batch in ranks for r in batch]
            assert len(set(rows)) == 12  # disjoint across ranks
            whole = bundle.train_batch(step, 12, seed=9)["tokens"]
            assert rows == [r.numpy().tobytes() for r in whole]  # and together they are the 1-process batch
        assert (run[0][:, :] >= 0).all() and bundle.train_batch(0, 4, seed=9)["loss_mask"].all()
    with pytest.raises(ValueError, match="0 <= rank < world_size"):
        bundle.train_batch(0, 4, seed=0, rank=3, world_size=3)


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing", r"data\.domains\.d='.*missing\.txt': no such file"),
        ("glob", r"data\.domains\.d='.*\*\.nothing': the glob matches no file"),
        ("suffix", r"cannot tell the format of .*data\.csv from its name; rename it or set data\.format"),
        ("bad_jsonl", r"data file .*bad\.jsonl: could not be read as jsonl \(.*\); fix or remove the file"),
        ("bad_parquet", r"data file .*bad\.parquet: not a readable Parquet file"),
        ("no_field_jsonl", r"data file .*nofield\.jsonl: has no field 'text' \(fields: body\); set data\.text_field"),
        ("no_field_parquet", r"data file .*nofield\.parquet: has no column 'text' \(columns: body\)"),
        ("not_text", r"data file .*numbers\.jsonl: field 'text' holds int values, not text"),
        ("latin1", r"data file .*latin1\.txt: (is not valid UTF-8|could not be read as text)"),
        ("empty", r"data domain 'd': no text in its files \(.*empty\.jsonl\); check them and data\.text_field"),
        ("short_val", r"data domain 'd': its validation split \(2 tokens\) is shorter than one window"),
    ],
)
def test_bad_inputs_get_one_clear_error(tmp_path, setup, message):
    files = {
        "missing": ("missing.txt", None),
        "glob": ("*.nothing", None),
        "suffix": ("data.csv", b"a,b\n"),
        "bad_jsonl": ("bad.jsonl", b'{"text": "ok"}\n{"text": broken\n'),
        "no_field_jsonl": ("nofield.jsonl", b'{"body": "x"}\n'),
        "not_text": ("numbers.jsonl", b'{"text": 5}\n'),
        "latin1": ("latin1.txt", "café".encode("latin-1")),
        "empty": ("empty.jsonl", b""),
        "short_val": ("short.txt", b"x" * 30),
    }
    if setup == "bad_parquet":
        name = "bad.parquet"
        (tmp_path / name).write_bytes(b"PAR1 not really")
    elif setup == "no_field_parquet":
        name = "nofield.parquet"
        pq.write_table(pa.table({"body": ["x"]}), tmp_path / name)
    else:
        name, content = files[setup]
        if content is not None:
            (tmp_path / name).write_bytes(content)
    with pytest.raises(DataConfigError, match=message):
        build_data(files_config(tmp_path, {"d": [str(tmp_path / name)]}), seq_len=8)


def test_bad_seq_len():
    with pytest.raises(DataConfigError, match="seq_len=0: must be a positive integer"):
        build_data(DataConfig(), seq_len=0)


def test_a_corpus_too_short_for_any_split_says_use_more_text_not_raise_val_fraction(tmp_path):
    (tmp_path / "tiny.txt").write_bytes(b"To be or not to be. \n")  # 21 bytes: 22 tokens with the end of text
    with pytest.raises(DataConfigError) as err:
        build_data(files_config(tmp_path, {"d": [str(tmp_path / "tiny.txt")]}), seq_len=128)
    message = str(err.value)
    assert "data domain 'd' has 22 tokens" in message, message
    assert "one training and one validation window of seq_len + 1 = 129 tokens each (258 tokens)" in message, message
    assert "use more text" in message and "train.seq_len" in message, message
    assert "val_fraction" not in message, message  # no value of it can split 22 tokens into two 129-token windows


def test_a_short_validation_split_names_the_val_fraction_that_works(tmp_path):
    (tmp_path / "short.txt").write_bytes(b"x" * 30)  # 31 tokens; windows of 9: val_fraction >= 9/31
    config = files_config(tmp_path, {"d": [str(tmp_path / "short.txt")]})
    with pytest.raises(DataConfigError, match=r"raise data\.val_fraction to at least 0\.3 \(now 0\.05\)"):
        build_data(config, seq_len=8)
    bundle = build_data(files_config(tmp_path, {"d": [str(tmp_path / "short.txt")]}, val_fraction=0.3), seq_len=8)
    assert bundle.info["domains"]["d"]["val_windows"] == 1  # the advice works
