"""Typed configs of a training run. Hydra composes YAML; `RunConfig.from_dict` turns it into these.

Each section is a frozen dataclass validated at construction; an unknown key or a bad value raises
ConfigError naming `<section>.<field>`, the value and what is allowed.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from functools import cache
from typing import Any

from mta_lab.attention.spec import AttentionSpec
from mta_lab.errors import UserError
from mta_lab.fields import known_fields, plain
from mta_lab.model.config import ModelConfig


class ConfigError(UserError, ValueError):
    """A bad run config: the message names the field, the value and the fix."""


def _fail(section: str, name: str, value: Any, problem: str) -> None:
    raise ConfigError(f"{section}.{name}={value!r}: {problem}")


def _from_dict(cls, section: str, data: Mapping[str, Any] | None):
    data = known_fields(cls, data or {}, section, ConfigError)
    for key, value in data.items():  # YAML lists -> tuples for tuple-typed fields
        if isinstance(value, list):
            data[key] = tuple(value)
    return cls(**data)


@cache
def _integer_fields(cls: type) -> tuple[tuple[str, bool], ...]:
    """(name, may be None) of every field of the dataclass `cls` typed `int` or `int | None`."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in fields(cls):
        args = set(typing.get_args(hints[f.name])) or {hints[f.name]}
        if int in args and args <= {int, type(None)}:
            out.append((f.name, type(None) in args))
    return tuple(out)


def _integers(section: str, obj: Any, *, whole_floats: tuple[str, ...] = ()) -> None:
    """Every int field holds an int (not a float, a bool or a string): 2.5 steps is an error, not 2.
    Fields in `whole_floats` also take a whole number written as a float (token_budget=1e9) and store the int."""
    for name, optional in _integer_fields(type(obj)):
        value = getattr(obj, name)
        if value is None and optional:
            continue
        if name in whole_floats and isinstance(value, float) and value.is_integer():
            object.__setattr__(obj, name, int(value))
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(section, name, value, "must be an integer" + (" or null" if optional else ""))


def _positive(section: str, obj: Any, *names: str, allow_none: bool = False) -> None:
    for name in names:
        value = getattr(obj, name)
        if value is None and allow_none:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            _fail(section, name, value, "must be a positive number" + (" or null" if allow_none else ""))


def _one_of(section: str, obj: Any, name: str, allowed: tuple) -> None:
    value = getattr(obj, name)
    if value not in allowed:
        _fail(section, name, value, f"must be one of {', '.join(map(str, allowed))}")


# How a retrofit (init_from a model with another attention spec) treats the new layers' group norm and gate:
# "spec" keeps them as the spec says (the model no longer equals its parent at step 0: both losses are logged),
# "exact" turns them off (identity kernels and mixing then compute the parent's function exactly).
INIT_RETROFIT = ("spec", "exact")

SCHEDULES = ("linear", "cosine", "constant")


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with decay / no-decay groups and a warmup + decay schedule (spec §4's recipe by default)."""

    lr: float = 1.5e-4
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-8
    weight_decay: float = 0.05
    schedule: str = "linear"  # linear warmup then linear decay | cosine | constant (after warmup)
    warmup_steps: int = 375
    min_lr_ratio: float = 0.0  # final lr as a fraction of lr (linear / cosine)
    grad_clip: float | None = 1.0

    def __post_init__(self) -> None:
        s = "optim"
        _integers(s, self)
        _positive(s, self, "lr", "eps")
        _positive(s, self, "grad_clip", allow_none=True)
        _one_of(s, self, "schedule", SCHEDULES)
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            _fail(s, "betas", list(self.betas), "must be two numbers in [0, 1)")
        if self.weight_decay < 0:
            _fail(s, "weight_decay", self.weight_decay, "must be >= 0")
        if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            _fail(s, "warmup_steps", self.warmup_steps, "must be an integer >= 0")
        if not 0 <= self.min_lr_ratio <= 1:
            _fail(s, "min_lr_ratio", self.min_lr_ratio, "must be in [0, 1]")


PRECISIONS = ("auto", "32-true", "bf16-mixed", "16-mixed", "64-true")
EVAL_TASKS = ("niah", "babilong", "lambada", "zeroshot", "harness")  # mta_lab/eval/options.py TASKS, less toy


def _option_pairs(value: Any) -> tuple[tuple[str, Any], ...]:
    """`train.eval_options` as sorted ("task.key", value) pairs: from a mapping {task: {key: value}} (YAML, Hydra)
    or {"task.key": value}, or from such pairs; list values become comma strings ([160, 220] -> "160,220")."""
    if value is None:
        return ()
    if isinstance(value, Mapping):
        items = []
        for task, options in value.items():
            if isinstance(options, Mapping):
                items += [(f"{task}.{k}", v) for k, v in options.items()]
            else:
                items.append((str(task), options))
    elif isinstance(value, list | tuple) and all(isinstance(p, list | tuple) and len(p) == 2 for p in value):
        items = [tuple(p) for p in value]
    else:
        _fail("train", "eval_options", value, "must be a mapping {task: {option: value}}, e.g. "
              "{niah: {contexts: [1024, 2048], samples: 20}}")
    out = {}
    for key, v in items:
        if not isinstance(key, str) or "." not in key:
            _fail("train", "eval_options", dict(value) if isinstance(value, Mapping) else value,
                  f"{key!r} is not under a task; write {{niah: {{samples: 20}}}}")
        if isinstance(v, list | tuple):
            v = ",".join(map(str, v))
        if isinstance(v, Mapping):
            _fail("train", f"eval_options.{key}", v, "must be a number, a string or a list")
        out[key] = v
    return tuple(sorted(out.items()))


@dataclass(frozen=True)
class TrainConfig:
    """How long and how: batch, context, budget (exactly one of max_steps / token_budget / flop_budget)."""

    seed: int = 0
    batch_size: int = 16  # per device
    seq_len: int = 128  # text context; the toy task sets its own
    max_steps: int | None = None
    token_budget: int | None = None
    flop_budget: float | None = None
    val_every: int = 100
    val_batches: int | None = None  # cap per domain; null = the whole validation split
    val_batch_size: int | None = None  # null = batch_size
    ckpt_every: int = 100
    keep_checkpoints: int = 2
    log_every: int = 10
    precision: str = "auto"  # auto: bf16-mixed on GPU, 32-true on CPU
    compile: bool = False
    activation_checkpointing: bool = False
    peak_flops: float | None = None  # per device, FLOP/s, for MFU; null = looked up from the GPU name
    evals: tuple[str, ...] = ()  # eval tasks run on the final model (EVAL_TASKS), logged to the run as eval/*
    # their options as sorted ("task.key", value) pairs (hashable); YAML gives a mapping {task: {key: value}}
    eval_options: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        s = "train"
        self._check_evals()
        _integers(s, self, whole_floats=("token_budget",))
        _positive(s, self, "batch_size", "seq_len", "val_every", "ckpt_every", "log_every", "keep_checkpoints")
        _positive(s, self, "max_steps", "token_budget", "flop_budget", "val_batches", "val_batch_size",
                  "peak_flops", allow_none=True)
        _one_of(s, self, "precision", PRECISIONS)
        budgets = [n for n in ("max_steps", "token_budget", "flop_budget") if getattr(self, n) is not None]
        if len(budgets) != 1:
            raise ConfigError(
                f"train: set exactly one of max_steps, token_budget, flop_budget (got {', '.join(budgets) or 'none'}); "
                "e.g. train.max_steps=1000 or train.token_budget=1e9 (override the others with null)"
            )

    def _check_evals(self) -> None:
        """`evals` names known tasks once each; `eval_options` holds, per task of `evals`, options that task takes
        (checked by `mta_lab.eval.options`: the same checks and messages as `mta-lab eval TASK`)."""
        evals = self.evals
        if evals is None:
            evals = ()
        elif isinstance(evals, str):
            evals = tuple(t for t in evals.replace(" ", "").split(",") if t)
        if not isinstance(evals, tuple) or not all(isinstance(t, str) for t in evals):
            _fail("train", "evals", evals, f"must be a list of eval task names ({', '.join(EVAL_TASKS)})")
        bad = [t for t in evals if t not in EVAL_TASKS]
        if bad:
            _fail("train", "evals", list(evals), f"unknown task {', '.join(bad)}; allowed: {', '.join(EVAL_TASKS)}"
                  + (" (the toy task's error rate is measured by validation: final/val_error_rate)"
                     if "toy" in bad else ""))
        if len(set(evals)) != len(evals):
            _fail("train", "evals", list(evals), "names a task twice")
        object.__setattr__(self, "evals", evals)
        pairs = _option_pairs(self.eval_options)
        object.__setattr__(self, "eval_options", pairs)
        for task in {key.split(".", 1)[0] for key, _ in pairs} - set(evals):
            _fail("train", f"eval_options.{task}", self.options_for(task), f"{task} is not in train.evals "
                  f"({list(evals)}); add it there or drop its options")
        for task in evals:
            self.checked_eval_options(task)

    def options_for(self, task: str) -> dict[str, Any]:
        """The options given for `task` (not its defaults)."""
        return {key.split(".", 1)[1]: value for key, value in self.eval_options if key.split(".", 1)[0] == task}

    def checked_eval_options(self, task: str) -> dict[str, Any]:
        """`task`'s defaults updated by its `eval_options`, checked; ConfigError naming train.eval_options.TASK."""
        from mta_lab.eval.errors import EvalError
        from mta_lab.eval.options import CLI_ONLY, TASKS, check_options

        given, defaults = self.options_for(task), TASKS[task][1]
        allowed = [k for k in defaults if k not in CLI_ONLY]
        unknown = sorted(k for k in given if k not in allowed)
        if unknown:
            _fail("train", f"eval_options.{task}", given, f"unknown option(s) {', '.join(unknown)}; {task} takes "
                  f"{', '.join(allowed)} (the final model and its MLflow run are the run's own)")
        try:
            return check_options(task, {**defaults, **given}, need_ckpt=False)
        except EvalError as err:
            raise ConfigError(f"train.eval_options.{task}.{err}") from None

    def total_steps(self, tokens_per_step: int, train_flops_per_token: int) -> int:
        """Optimizer steps the budget buys."""
        if self.max_steps is not None:
            return int(self.max_steps)
        if self.token_budget is not None:
            return max(1, math.ceil(self.token_budget / tokens_per_step))
        return max(1, math.ceil(self.flop_budget / (train_flops_per_token * tokens_per_step)))


ACCELERATORS = ("auto", "cpu", "gpu")
STRATEGIES = ("auto", "single", "ddp", "fsdp")


@dataclass(frozen=True)
class TrainerConfig:
    """Where: accelerator, devices per node, nodes and the parallel strategy."""

    accelerator: str = "auto"
    devices: int = 1
    num_nodes: int = 1
    strategy: str = "auto"  # auto: single device, or DDP when devices * num_nodes > 1

    def __post_init__(self) -> None:
        s = "trainer"
        _integers(s, self)
        _one_of(s, self, "accelerator", ACCELERATORS)
        _one_of(s, self, "strategy", STRATEGIES)
        _positive(s, self, "devices", "num_nodes")
        if self.strategy == "single" and self.devices * self.num_nodes > 1:
            _fail(s, "strategy", self.strategy, f"runs on one device but devices={self.devices} x "
                  f"num_nodes={self.num_nodes}; use ddp or fsdp")


@dataclass(frozen=True)
class TrackingConfig:
    """MLflow. uri null -> sqlite:///<root>/mlflow.db (never the deprecated file store)."""

    uri: str | None = None
    experiment: str = "mta-lab"
    run_name: str | None = None
    tags: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.uri is not None and not self.uri.startswith(("sqlite:///", "http://", "https://", "postgresql",
                                                             "mysql", "databricks")):
            _fail("tracking", "uri", self.uri, "must be a database URI (sqlite:///path/mlflow.db, postgresql://...) "
                  "or a tracking server URL (http://host:5000); the ./mlruns file store is not supported")


@dataclass(frozen=True)
class RunConfig:
    """Everything one training run needs. `name` and `root` place it: run dir = <root>/<name>."""

    model: ModelConfig
    attention: AttentionSpec
    data: Any  # mta_lab.data.DataConfig
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(max_steps=100))
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    name: str = "default"
    root: str = "runs"
    resume: str = "never"  # never | auto | a checkpoint path
    init_from: str | None = None  # weights of a trained model: a run dir, its final/model.pt or a checkpoint
    init_retrofit: str | None = None  # spec | exact: see INIT_RETROFIT (mta_lab/train/init_from.py)
    model_name: str = "custom"  # the presets chosen (for MLflow tags)
    attention_name: str = "custom"
    data_name: str = "custom"

    def __post_init__(self) -> None:
        if isinstance(self.name, int | float) and not isinstance(self.name, bool):  # name=2024 from the CLI
            object.__setattr__(self, "name", str(self.name))
        if not isinstance(self.name, str) or not self.name or "/" in self.name:
            _fail("run", "name", self.name, "must be a non-empty name without '/'")
        self._check_hf()
        self._check_init()
        self.check_model_fit()

    def _check_hf(self) -> None:
        """model=hf: the checkpoint is read (config.json, Llama only) and sets the model's sizes; what this module
        cannot do with it yet is refused here, before any run directory."""
        if self.model.source != "hf":
            return
        if not self.model.path:
            _fail("model", "path", self.model.path, "model=hf needs the local directory of a Llama checkpoint: "
                  "model.path=/path/to/Llama-3.2-1B (the folder with config.json and *.safetensors)")
        from mta_lab.hf.checkpoint import model_config_of
        from mta_lab.hf.requirements import require_transformers

        require_transformers()
        object.__setattr__(self, "model", model_config_of(self.model.path))
        unsupported = {"init_from": self.init_from is not None, "train.compile": self.train.compile,
                       "train.activation_checkpointing": self.train.activation_checkpointing,
                       "trainer.strategy=fsdp": self.trainer.strategy == "fsdp"}
        for name, used in unsupported.items():
            if used:
                _fail("model", "path", self.model.path, f"{name} is not supported with model=hf yet; drop it "
                      "(model=hf retrofits MTA into the checkpoint's weights itself)")

    def _check_init(self) -> None:
        """`init_from` / `init_retrofit` (the files are read when training starts); `exact` turns the spec's group
        norm and gate off, so that identity-initialised MTA layers inserted into a trained model leave it unchanged."""
        if self.init_from is not None and (not isinstance(self.init_from, str) or not self.init_from):
            _fail("run", "init_from", self.init_from, "must be a path (a run directory, its final/model.pt or a "
                  "checkpoints/*.ckpt file) or null")
        if self.init_retrofit is None:
            return
        _one_of("run", self, "init_retrofit", INIT_RETROFIT)
        if self.init_from is None:
            _fail("run", "init_retrofit", self.init_retrofit, "applies only with init_from=<trained run>; drop it")
        if self.init_retrofit == "exact":
            spec = self.attention
            if spec.kind not in ("mta", "talking_heads", "softmax"):
                _fail("run", "init_retrofit", "exact", f"needs an MTA, Talking-heads or softmax spec, not "
                      f"attention.kind={spec.kind} (DIFF's output norm is part of it); use init_retrofit=spec")
            if spec.has_kq_conv and spec.kernel_init != "identity":
                _fail("run", "init_retrofit", "exact", f"needs identity kq kernels (attention.kernel_init="
                      f"{spec.kernel_init} changes the parent's attention); set attention.kernel_init=identity or "
                      "use init_retrofit=spec")
            if spec.group_norm != "none" or spec.gate != "none":
                object.__setattr__(self, "attention", replace(spec, group_norm="none", gate="none"))

    def check_model_fit(self) -> None:
        """The attention spec's checks that need the model (head groups, kq layers, DIFF's head pairs), made here
        so that `--print-config` and `train` fail before any work. (The context length is checked against the data
        when training starts: a train preset alone, e.g. `train=paper` with the tiny model, must still compose.)"""
        self.attention.check_model(n_heads=self.model.n_heads, n_layers=self.model.n_layers)

    @property
    def run_dir(self) -> str:
        return f"{self.root}/{self.name}"

    @property
    def tracking_uri(self) -> str:
        import os

        return self.tracking.uri or f"sqlite:///{os.path.abspath(self.root)}/mlflow.db"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunConfig:
        from mta_lab.data import DataConfig

        data = dict(data)
        sections = {
            "model": lambda d: ModelConfig.from_dict(d or {}),
            "attention": lambda d: AttentionSpec.from_dict(d or {}),
            "data": lambda d: DataConfig.from_dict(d or {}),
            "optim": lambda d: _from_dict(OptimConfig, "optim", d),
            "train": lambda d: _from_dict(TrainConfig, "train", d),
            "trainer": lambda d: _from_dict(TrainerConfig, "trainer", d),
            "tracking": lambda d: _from_dict(TrackingConfig, "tracking", d),
        }
        known = set(sections) | {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown top-level key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")
        built = {key: make(data.get(key)) for key, make in sections.items()}
        rest = {k: v for k, v in data.items() if k not in sections}
        return cls(**built, **rest)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        for key in ("model", "attention", "data"):
            out[key] = out[key].to_dict() if hasattr(out[key], "to_dict") else asdict(out[key])
        for key in ("optim", "train", "trainer", "tracking"):
            out[key] = plain(asdict(out[key]))
        options: dict[str, dict[str, Any]] = {}
        for key, value in self.train.eval_options:
            task, name = key.split(".", 1)
            options.setdefault(task, {})[name] = value
        out["train"]["eval_options"] = options
        return out
