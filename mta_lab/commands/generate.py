"""`mta-lab generate ckpt=<path> prompt="..."`: sample text from a trained model with the incremental cache.

The tokenizer is the one the run trained with (its checkpoint's data config): the toy task's character
tokenizer (the prompt gets the BOS the toy samples start with), or `data.tokenizer` of a text run (byte, char,
or a tokenizer file, which must still exist at the recorded path). Without a usable tokenizer, give token ids with
`prompt_ids=1,2,3`; the output is then printed as ids.
"""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.markup import escape

from mta_lab.commands.options import parse_key_values
from mta_lab.errors import UsageError

USAGE = ("ckpt=<run dir | final/model.pt | checkpoints/*.ckpt | final/hf>, optional: prompt=\"text\" or "
         "prompt_ids=1,2,3, max_new_tokens=64 temperature=1.0 top_k=0 seed=0 device=auto|cpu|cuda stop_at_eos=true "
         "cache=true")
DEFAULTS = {"ckpt": None, "prompt": None, "prompt_ids": None, "max_new_tokens": 64, "temperature": 1.0,
            "top_k": 0, "seed": 0, "device": "auto", "stop_at_eos": True, "cache": True}
DEVICES = ("auto", "cpu", "cuda")


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "generate", help="sample tokens from a trained checkpoint (incremental decoding cache)",
        description=f"mta-lab generate {USAGE}. temperature=0 is greedy; top_k=0 samples from the whole vocabulary. "
        "The prompt is encoded with the run's tokenizer; prompt_ids= gives raw token ids instead. cache=false "
        "recomputes the full forward for every token (the slow reference). A model=hf run decodes with HF's KV cache, "
        "except with a kq convolution over c_q > 1 query rows, whose past queries that cache does not keep: it "
        "recomputes the full forward for every token even with cache=true (the same tokens, slower).",
    )
    parser.add_argument("options", nargs="*", metavar="KEY=VALUE", help=USAGE)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(handler=run_generate)


def _parse_ids(text: str) -> list[int]:
    try:
        ids = [int(part) for part in text.replace(" ", "").split(",") if part != ""]
    except ValueError:
        raise UsageError(f"prompt_ids={text!r}: must be comma-separated integer token ids, e.g. prompt_ids=1,2,3") \
            from None
    if not ids:
        raise UsageError(f"prompt_ids={text!r}: give at least one token id, e.g. prompt_ids=1,2,3")
    return ids


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_options(items: list[str]) -> dict:
    options = parse_key_values(items, DEFAULTS, usage=USAGE, raw_keys=("ckpt", "device", "prompt", "prompt_ids"))
    if not options["ckpt"]:
        raise UsageError(f"ckpt= is required; usage: mta-lab generate {USAGE}")
    if options["prompt"] is not None and options["prompt_ids"] is not None:
        raise UsageError("give either prompt= or prompt_ids=, not both")
    if options["prompt_ids"] is not None:
        options["prompt_ids"] = _parse_ids(options["prompt_ids"])
    if not _is_int(options["max_new_tokens"]) or options["max_new_tokens"] < 1:
        raise UsageError(f"max_new_tokens={options['max_new_tokens']!r}: must be a positive integer")
    temperature = options["temperature"]
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not temperature >= 0:
        raise UsageError(f"temperature={temperature!r}: must be a number >= 0 (0 = greedy)")
    options["temperature"] = float(temperature)
    if options["top_k"] is None:
        options["top_k"] = 0
    if not _is_int(options["top_k"]) or options["top_k"] < 0:
        raise UsageError(f"top_k={options['top_k']!r}: must be an integer >= 0 (0 = no top-k filter)")
    if not _is_int(options["seed"]):
        raise UsageError(f"seed={options['seed']!r}: must be an integer")
    if options["device"] not in DEVICES:
        raise UsageError(f"device={options['device']!r}: allowed: {', '.join(DEVICES)}")
    for key in ("stop_at_eos", "cache"):
        if not isinstance(options[key], bool):
            raise UsageError(f"{key}={options[key]!r}: must be true or false")
    return options


def _tokenizer_for(data: dict | None):
    """(tokenizer, prefix ids, description) of a checkpoint's data config; tokenizer None when unknown."""
    from mta_lab.data.tokenizers import TOY_ALPHABET, CharTokenizer, load_tokenizer

    if not data:
        return None, [], "no data config in the checkpoint"
    if data.get("kind") == "toy":
        tok = CharTokenizer(TOY_ALPHABET)
        return tok, [tok.bos_id], "char (toy task)"
    spec = data.get("tokenizer", "byte")
    try:
        return load_tokenizer(spec), [], str(spec)
    except (ValueError, ImportError) as err:
        return None, [], f"tokenizer {spec!r} cannot be rebuilt here ({err})"


def run_generate(args: argparse.Namespace) -> int:
    import torch

    from mta_lab.eval.checkpoint import load_model
    from mta_lab.model.generate import generate

    options = parse_options(args.options)
    device = options["device"]
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("device=cuda: no CUDA device is available here; use device=cpu")
    model, payload = load_model(options["ckpt"])
    model = model.to(device)
    vocab = model.config.vocab_size
    tokenizer, prefix, tok_desc = _tokenizer_for(payload.get("data"))

    if options["prompt_ids"] is not None:
        ids = options["prompt_ids"]
    else:
        if tokenizer is None:
            raise UsageError(f"ckpt={options['ckpt']}: {tok_desc}; give the prompt as token ids with prompt_ids=1,2,3")
        ids = prefix + tokenizer.encode(options["prompt"] or "")
        if not ids:  # a text model's empty prompt: start after an end-of-document token
            ids = [tokenizer.eos_id]
    bad = [i for i in ids if not 0 <= i < vocab]
    if bad:
        raise UsageError(f"prompt token ids {bad} are outside the model's vocabulary 0..{vocab - 1}")
    if tokenizer is not None and tokenizer.vocab_size > vocab:
        tokenizer = None  # the ids would not decode faithfully; print ids only
        tok_desc += f" (its vocabulary is larger than the model's {vocab}: printing ids)"

    generator = torch.Generator(device=device)
    generator.manual_seed(options["seed"])
    eos_id = tokenizer.eos_id if (tokenizer is not None and options["stop_at_eos"]) else None
    prompt = torch.tensor([ids], dtype=torch.long, device=device)
    result = generate(model, prompt, options["max_new_tokens"], temperature=options["temperature"],
                      top_k=options["top_k"] or None, generator=generator, eos_id=eos_id, use_cache=options["cache"])
    new_ids = result.tokens[0, result.prompt_len:].tolist()
    text = tokenizer.decode(new_ids) if tokenizer is not None else None
    summary = {"ckpt": options["ckpt"], "step": payload.get("step"), "tokenizer": tok_desc, "prompt_ids": ids,
               "new_ids": new_ids, "text": text, "new_tokens": result.new_tokens, "prefill_s": result.prefill_s,
               "decode_s": result.decode_s, "tokens_per_s": result.tokens_per_s, "cache": options["cache"],
               "recomputed": not options["cache"] or getattr(model, "decodes_by_recomputation", False),
               "cache_bytes": result.cache_bytes, "device": device}
    if args.json:
        print(json.dumps(summary))
        return 0
    console = Console()
    if text is not None:
        prompt_text = tokenizer.decode(ids)
        console.print(f"[dim]{escape(prompt_text)}[/][bold]{escape(text)}[/]", highlight=False)
    else:
        console.print(f"prompt ids: {','.join(map(str, ids))}", highlight=False)
        console.print(f"generated ids: [bold]{','.join(map(str, new_ids))}[/]", highlight=False)
    mode = "cached decoding" if options["cache"] else "full recomputation (cache=false)"
    if options["cache"] and getattr(model, "decodes_by_recomputation", False):
        mode = "full recomputation (model=hf with a kq convolution over c_q > 1 query rows: no KV cache)"
    console.print(f"[dim]{result.new_tokens} tokens in {result.prefill_s + result.decode_s:.3f}s "
                  f"(prefill {result.prefill_s:.3f}s) = {result.tokens_per_s:.1f} tokens/s, {mode} on {device}, "
                  f"tokenizer: {escape(tok_desc)}[/]", highlight=False)
    return 0
