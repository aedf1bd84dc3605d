"""Tokenizers: round trips, special ids, fingerprints, and one clear error per bad tokenizer file."""

from __future__ import annotations

import base64

import pytest

from mta_lab.data import DataConfigError, load_tokenizer
from mta_lab.data.tokenizers import TOY_ALPHABET, ByteTokenizer, CharTokenizer

TEXT = "Now, fair Hippolyta, our nuptial hour\nDraws on apace — naïve café, 東京, emoji 🎭.\n"
LINES = [
    "Now, fair Hippolyta, our nuptial hour draws on apace; four happy days bring in another moon.",
    "But, O, methinks, how slow this old moon wanes! She lingers my desires.",
    "Four days will quickly steep themselves in night; four nights will quickly dream away the time.",
] * 5


def test_byte_round_trip_on_unicode():
    tok = load_tokenizer("byte")
    ids = tok.encode(TEXT)
    assert ids == list(TEXT.encode("utf-8")) and max(ids) < 256
    assert tok.decode(ids) == TEXT
    assert tok.decode([tok.bos_id, *ids, tok.eos_id, tok.pad_id]) == TEXT  # specials are not text
    assert (tok.vocab_size, tok.bos_id, tok.eos_id, tok.pad_id) == (259, 256, 257, 258)
    assert tok.fingerprint == ByteTokenizer().fingerprint


def test_char_tokenizer_for_the_toy_task():
    tok = load_tokenizer("char")
    assert tok.vocab_size == len(TOY_ALPHABET) + 3 == 31
    text = "abc.xyz#ca"
    assert tok.decode(tok.encode(text)) == text
    assert tok.encode("a.#") == [0, 26, 27]
    assert {tok.bos_id, tok.eos_id, tok.pad_id} == {28, 29, 30}
    assert CharTokenizer("ab").fingerprint != tok.fingerprint
    with pytest.raises(DataConfigError, match="'A' is not in its alphabet"):
        tok.encode("aA")


def _train_bpe(path, special_tokens=("<|endoftext|>", "<pad>")):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=list(special_tokens), initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(LINES, trainer)
    tok.save(str(path))
    return tok


def test_hf_tokenizers_json_round_trip(tmp_path):
    path = tmp_path / "tokenizer.json"
    _train_bpe(path)
    tok = load_tokenizer(str(path))
    for text in (LINES[0], TEXT):
        assert tok.decode(tok.encode(text)) == text
    assert len(tok.encode(LINES[0])) < len(LINES[0].encode())  # it learned merges
    assert tok.eos_id == 0 and tok.pad_id == 1 and tok.bos_id == tok.eos_id  # no BOS token: falls back to EOS
    assert tok.fingerprint == load_tokenizer(str(path)).fingerprint != load_tokenizer("byte").fingerprint


def test_hf_tokenizer_without_eos_is_refused(tmp_path):
    path = tmp_path / "noeos.json"
    _train_bpe(path, special_tokens=("<unk>",))
    with pytest.raises(DataConfigError, match=r"data\.tokenizer=.*noeos\.json.*no end-of-text token"):
        load_tokenizer(str(path))


def test_tiktoken_file_round_trip(tmp_path):
    ranks = {bytes([b]): b for b in range(256)}
    for merged in (b"th", b"the", b"in", b" th", b" the"):
        ranks[merged] = len(ranks)
    path = tmp_path / "tiny.tiktoken"
    path.write_bytes(b"".join(base64.b64encode(t) + b" " + str(r).encode() + b"\n" for t, r in ranks.items()))
    tok = load_tokenizer(str(path))
    text = "the thing in the theatre " + TEXT
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert ranks[b" the"] in ids
    assert (tok.eos_id, tok.bos_id, tok.pad_id, tok.vocab_size) == (261, 262, 263, 264)
    assert tok.encode("<|endoftext|>") != [tok.eos_id]  # special text in documents stays text
    # The same path with new content is re-read (tiktoken's own cache is keyed by path).
    del ranks[b" the"]
    path.write_bytes(b"".join(base64.b64encode(t) + b" " + str(r).encode() + b"\n" for t, r in ranks.items()))
    assert load_tokenizer(str(path)).vocab_size == 263


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b'{"version": "1.0", "model": ', "not a valid HF tokenizers JSON file"),
        (b"this is not a tokenizer\n", "not a valid tiktoken BPE file"),
        (b"", "not a valid tiktoken BPE file"),
    ],
)
def test_corrupt_tokenizer_files(tmp_path, content, problem):
    path = tmp_path / "broken.bin"
    path.write_bytes(content)
    with pytest.raises(DataConfigError, match=rf"data\.tokenizer='{path}': {problem}.*allows 'byte', 'char'"):
        load_tokenizer(str(path))


def test_missing_tokenizer_file(tmp_path):
    with pytest.raises(DataConfigError, match=r"data\.tokenizer=.*nope\.json': no such file; data\.tokenizer allows"):
        load_tokenizer(str(tmp_path / "nope.json"))
