"""Bad input through `mta-lab train`: exit status 2, one `error: ...` message on stderr naming the thing and the
fix, no traceback, and nothing half-written (no run directory, no MLflow run)."""

from __future__ import annotations

from pathlib import Path

from integration_helpers import assert_one_line_error, free_port, run_cli, runs_in, sqlite_uri, tiny


def _no_mlflow_run(root: Path) -> None:
    if (root / "mlflow.db").exists():
        assert runs_in(sqlite_uri(root)) == []


def test_unreachable_tracking_server(tmp_path, data_cache):
    port = free_port()
    result = run_cli(*tiny(tmp_path, "srv", data_cache, max_steps=5), f"tracking.uri=http://127.0.0.1:{port}")
    assert_one_line_error(result, f"tracking.uri=http://127.0.0.1:{port}", "no MLflow server answers", "mlflow server")
    assert not (tmp_path / "srv").exists()  # no run directory, no checkpoints


def test_missing_data_file(tmp_path, data_cache):
    result = run_cli(*tiny(tmp_path, "missing", data_cache, max_steps=5), "data=files",
                     "data.domains={a: [/nonexistent.txt]}")
    assert_one_line_error(result, "data.domains.a='/nonexistent.txt'", "no such file")
    assert not (tmp_path / "missing").exists()
    _no_mlflow_run(tmp_path)


def test_corrupt_jsonl_file(tmp_path, data_cache):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"text": "a first document"}\n{"text": "a second one, cut off\n{"text": 3')
    result = run_cli(*tiny(tmp_path, "corrupt", data_cache, max_steps=5), "data=files",
                     f"data.domains={{web: [{corpus}]}}")
    assert_one_line_error(result, f"data file {corpus}", "could not be read as jsonl")
    assert not (tmp_path / "corrupt").exists()
    _no_mlflow_run(tmp_path)


def test_vocab_smaller_than_the_tokenizer(tmp_path, data_cache):
    result = run_cli(*tiny(tmp_path, "vocab", data_cache, max_steps=5), "model.vocab_size=100")
    assert_one_line_error(result, "model.vocab_size=100", "smaller than the tokenizer's vocabulary (259)",
                          "model.vocab_size>=259")
    assert not (tmp_path / "vocab").exists()
    _no_mlflow_run(tmp_path)


def test_unknown_override_keys(tmp_path, data_cache):
    base = tiny(tmp_path, "unknown", data_cache, max_steps=5)
    assert_one_line_error(run_cli(*base, "train.colour=red"), "train.colour", "+train.colour=red")
    assert_one_line_error(run_cli(*base, "+train.colour=red"), "train: unknown field(s) colour", "allowed fields:")
    assert_one_line_error(run_cli(*base, "+colour=red"), "unknown top-level key(s) colour")
    assert not (tmp_path / "unknown").exists()
    _no_mlflow_run(tmp_path)


def test_a_fractional_batch_size_is_an_error_before_any_record(tmp_path, data_cache):
    result = run_cli(*tiny(tmp_path, "frac", data_cache, max_steps=5, batch_size=2.5))
    assert_one_line_error(result, "train.batch_size=2.5", "must be an integer")
    assert not (tmp_path / "frac").exists()
    assert not (tmp_path / "mlflow.db").exists()


def test_a_spec_that_does_not_fit_the_model_fails_print_config_and_train_before_any_record(tmp_path, data_cache):
    bad = ["attention=mta", "attention.kq_layers=[7]"]
    base = tiny(tmp_path, "kq", data_cache, max_steps=5)
    assert_one_line_error(run_cli(*base, *bad, "--print-config"), "attention.kq_layers", "n_layers=4")
    assert_one_line_error(run_cli(*base, *bad), "attention.kq_layers", "n_layers=4")
    assert not (tmp_path / "kq").exists()
    assert not (tmp_path / "mlflow.db").exists()
