"""DataConfig validation: every bad value gets one message naming the field, the value and what is allowed."""

from __future__ import annotations

import pytest

from mta_lab.data import DataConfig, DataConfigError


def test_defaults_are_valid_and_round_trip():
    config = DataConfig()
    assert (config.kind, config.corpus, config.tokenizer, config.val_fraction) == ("text", "shakespeare", "byte", 0.05)
    assert DataConfig.from_dict(config.to_dict()) == config


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(DataConfigError, match=r"data: unknown field\(s\) seqlen, toyn; allowed fields: cache_dir, "):
        DataConfig.from_dict({"toyn": 5, "seqlen": 3})


def test_yaml_style_containers_become_plain():
    config = DataConfig(corpus="files", domains={"web": "a.jsonl", "code": ("b.jsonl", "c/*.jsonl")})
    assert config.domains == {"web": ["a.jsonl"], "code": ["b.jsonl", "c/*.jsonl"]}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "image"}, r"data\.kind='image': allowed: text, toy"),
        ({"corpus": "pile"}, r"data\.corpus='pile': allowed: shakespeare, files, slimpajama"),
        ({"format": "csv"}, r"data\.format='csv': allowed: auto, text, jsonl, parquet"),
        ({"corpus": "files"}, r"data\.domains=None: corpus=files needs domains"),
        ({"domains": {"a": ["x.txt"]}}, r"data\.domains=.*only used with corpus=files \(corpus is 'shakespeare'\)"),
        ({"corpus": "files", "domains": {"a": []}}, r"data\.domains\.a=\[\]: must be a non-empty list of file paths"),
        ({"corpus": "slimpajama"}, r"data\.path=None: corpus=slimpajama needs path"),
        ({"path": "/data"}, r"data\.path='/data': only used with corpus=slimpajama"),
        ({"source_weights": {"comedies": -1}}, r"data\.source_weights\.comedies=-1: must be a finite number >= 0"),
        ({"source_weights": {"a": 0}}, r"data\.source_weights=\{'a': 0\}: at least one weight must be positive"),
        (
            {"corpus": "files", "domains": {"a": ["x"], "b": ["y"]}, "source_weights": {"a": 1, "c": 1}},
            r"data\.source_weights=.*unknown domain\(s\) c; give one weight per domain \(a, b\)",
        ),
        ({"val_fraction": 0}, r"data\.val_fraction=0: must be a number strictly between 0 and 1"),
        ({"val_fraction": 1.5}, r"data\.val_fraction=1\.5: must be a number strictly between 0 and 1"),
        ({"val_windows": 0}, r"data\.val_windows=0: must be an integer >= 1 or null"),
        ({"text_field": ""}, r"data\.text_field='': must be a non-empty column name"),
        ({"tokenizer": ""}, r"data\.tokenizer='': allowed: 'byte', 'char', a path to an HF tokenizer\.json"),
        ({"data_seed": -1}, r"data\.data_seed=-1: must be an integer >= 0"),
        ({"toy_n": True}, r"data\.toy_n=True: must be an integer >= 1"),
        ({"cache_dir": ""}, r"data\.cache_dir='': must be a directory path or null"),
    ],
)
def test_bad_values(kwargs, message):
    with pytest.raises(DataConfigError, match=message):
        DataConfig(**kwargs)


def test_error_is_a_value_error():
    assert issubclass(DataConfigError, ValueError)
