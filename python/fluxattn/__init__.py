"""FluxAttn from Python: the engine, its tokenizer, eval/compare, and routing policies in Python.

The package wraps the C++ engine the ``fluxattn`` command line runs (the same set-up code, the
same plugins, bundled inside the package), so that::

    import fluxattn
    engine = fluxattn.Engine.from_config("models/demo/configs/flux_router.toml")
    result = engine.generate("The passkey is 4213. What is the passkey?", max_new_tokens=8)
    print(result.text, result.trace.sa_ratio)

gives the tokens ``fluxattn generate --config ... --json`` prints. A routing policy can be a
Python class (see :class:`RoutingPolicy`) named in TOML as ``plugin = "python:module.Class"``.
Errors raise :class:`Error` with the command line's one-line messages.
"""

from __future__ import annotations

import importlib
import json as _json
import os as _os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Union

import numpy as np

from . import _core
from ._core import Error, ModelInfo, PolicyBatch, PolicyRequest

__all__ = [
    "Engine",
    "Error",
    "LayerRouting",
    "ModelInfo",
    "PolicyBatch",
    "PolicyRequest",
    "Result",
    "RoutingPolicy",
    "StepResult",
    "Trace",
    "compare",
    "eval",
    "list_plugins",
    "register_policy",
    "time_policy",
    "FULL",
    "SPARSE",
]

__version__ = _core.core_version

FULL = "full"
SPARSE = "sparse"

_PLUGIN_DIR = _os.path.join(_os.path.dirname(_os.path.abspath(__file__)), "lib", "fluxattn", "plugins")
_core._set_package_plugin_dir(_PLUGIN_DIR)

Prompt = Union[str, Sequence[int], "np.ndarray"]


# --------------------------------------------------------------------------------------------
# Results


@dataclass
class LayerRouting:
    """How one layer of one request was run."""

    layer: int
    choice: str  # "full" or "sparse": the policy's answer
    decided_by: str  # "router" or "override"
    backend: str  # backend instance the layer was routed to
    plugin: str  # the plugin behind it
    prefill_backend: str  # instance that ran its prompt (another with prefill_with)
    decode_backend: str  # instance that runs its decode steps (another with decode_with)
    logits: List[float]  # the router's raw outputs (may be empty)
    fallback: str  # non-empty: why the chosen backend was replaced by the full one
    kv_bytes: int  # KV bytes the layer holds at the end

    def to_json(self) -> Dict[str, Any]:
        """The layer as ``fluxattn generate --json`` writes it under ``routing``."""
        out: Dict[str, Any] = {
            "layer": self.layer,
            "backend": self.backend,
            "plugin": self.plugin,
            "choice": self.choice,
            "decided_by": self.decided_by,
            "logits": list(self.logits),
            "kv_bytes": self.kv_bytes,
        }
        if self.fallback:
            out["fallback"] = self.fallback
        if self.prefill_backend != self.backend:
            out["prefill_backend"] = self.prefill_backend
        if self.decode_backend != self.backend:
            out["decode_backend"] = self.decode_backend
        return out


@dataclass
class Trace:
    """The routing trace of one request (what ``fluxattn generate --trace`` writes)."""

    request_id: int
    prompt_tokens: int
    routing: str  # the routing policy of the request ("router" or a [routers.<name>])
    sa_ratio: float  # fraction of layers run by a backend other than the full one
    kv_bytes: int
    kv_bytes_after_prefill: int
    kv_bytes_full_cache: int
    layers: List[LayerRouting]

    @property
    def choices(self) -> List[str]:
        """The policy's choice per layer, in layer order."""
        return [layer.choice for layer in self.layers]

    def to_json(self) -> Dict[str, Any]:
        """One entry of the ``requests`` list of a ``--trace`` file."""
        return {
            "request_id": self.request_id,
            "prompt_tokens": self.prompt_tokens,
            "routing": self.routing,
            "sa_ratio": self.sa_ratio,
            "kv_bytes": self.kv_bytes,
            "kv_bytes_after_prefill": self.kv_bytes_after_prefill,
            "kv_bytes_full_cache": self.kv_bytes_full_cache,
            "layers": [layer.to_json() for layer in self.layers],
        }


@dataclass
class Result:
    """One finished request."""

    request_id: int
    tokens: List[int]  # generated tokens (the stop token included when it ended)
    text: Optional[str]  # their text (None without a tokenizer)
    finish_reason: str  # "stop" or "length"
    trace: Trace
    logits: Optional[np.ndarray] = None  # with logits=True: float32 [new tokens, vocab]
    timing: Dict[str, float] = field(default_factory=dict)  # of the generate call

    def to_json(self) -> Dict[str, Any]:
        """The request as ``fluxattn generate --json`` prints it (without ``timing``)."""
        out: Dict[str, Any] = {
            "tokens": list(self.tokens),
            "finish_reason": self.finish_reason,
            "routing": [layer.to_json() for layer in self.trace.layers],
            "sa_ratio": self.trace.sa_ratio,
            "kv_bytes": self.trace.kv_bytes,
            "text": self.text,
        }
        if self.logits is not None and len(self.logits):
            out["logits"] = self.logits[-1].tolist()
        return out


@dataclass
class StepResult:
    """What one :meth:`Engine.step` did."""

    tokens: List[tuple]  # (request_id, token) in the order requests were added
    finished: List[Result]
    failed: List[tuple]  # (request_id, message)
    prefill_tokens: int
    decode_tokens: int
    seconds: float


def _trace(d: Mapping[str, Any]) -> Trace:
    layers = [LayerRouting(**layer) for layer in d["layers"]]
    return Trace(**{**d, "layers": layers})


def _result(d: Mapping[str, Any], timing: Optional[Dict[str, float]] = None) -> Result:
    return Result(
        request_id=d["request_id"],
        tokens=list(d["tokens"]),
        text=d["text"],
        finish_reason=d["finish_reason"],
        trace=_trace(d["trace"]),
        logits=d["logits"],
        timing=dict(timing or {}),
    )


# --------------------------------------------------------------------------------------------
# The engine


class Engine:
    """A model with its composition of attention backends and routing policies.

    Make one with :meth:`from_config` (a TOML file, as ``fluxattn generate --config``) or
    :meth:`from_model` (a checkpoint with its built-in composition, as ``--model``). Long calls
    release the GIL.
    """

    def __init__(self, core: "_core.Engine"):
        self._core = core

    @classmethod
    def from_config(
        cls, path: Union[str, "os.PathLike[str]"], *, threads: Optional[int] = None,
        plugin_paths: Iterable[str] = ()
    ) -> "Engine":
        """Loads a TOML engine configuration, its checkpoint and plugins.

        ``threads`` overrides ``[model] threads`` (0: all cores); ``plugin_paths`` are further
        plugin directories. A ``[router]``/``[routers.<name>]`` table may name a Python policy:
        ``plugin = "python:module.Class"`` or ``"python:<name given to register_policy>"``.
        """
        return cls(_core.Engine.from_config(_os.fspath(path), _threads(threads), list(plugin_paths)))

    @classmethod
    def from_model(
        cls, path: Union[str, "os.PathLike[str]"], *, device: str = "cpu",
        threads: Optional[int] = None, plugin_paths: Iterable[str] = ()
    ) -> "Engine":
        """A checkpoint folder with the composition ``fluxattn generate --model`` uses: every
        layer on ``full``, or the Flux router for Flux checkpoints."""
        return cls(_core.Engine.from_model(_os.fspath(path), device, _threads(threads), list(plugin_paths)))

    # --- information ---
    @property
    def model_info(self) -> ModelInfo:
        """The model's shape and config.json scalars."""
        return self._core.model_info

    @property
    def routing_policies(self) -> List[str]:
        """Routing policies a request may name ("" is the default one)."""
        return self._core.routing_policies

    @property
    def num_queued(self) -> int:
        return self._core.num_queued

    @property
    def num_running(self) -> int:
        return self._core.num_running

    @property
    def idle(self) -> bool:
        return self._core.num_queued == 0 and self._core.num_running == 0

    # --- tokenizer ---
    @property
    def has_tokenizer(self) -> bool:
        return self._core.has_tokenizer

    def encode(self, text: str, *, add_special_tokens: bool = True) -> List[int]:
        """Text to token ids, as ``--prompt`` encodes it."""
        return self._core.encode(text, add_special_tokens)

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = False) -> str:
        """Token ids to text."""
        return self._core.decode([int(i) for i in ids], skip_special_tokens)

    def _ids(self, prompt: Prompt) -> List[int]:
        if isinstance(prompt, str):
            return self.encode(prompt)
        return [int(i) for i in prompt]

    # --- generation ---
    def generate(
        self,
        prompts: Union[Prompt, Sequence[Prompt]],
        *,
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int = 0,
        ignore_eos: bool = False,
        stop_tokens: Sequence[int] = (),
        logits: bool = False,
        on_token: Optional[Callable[[int, int], None]] = None,
    ) -> Union[Result, List[Result]]:
        """Generates for one prompt (a string or a list of ids: returns a :class:`Result`) or a
        batch (a list of those: returns a list), with the options of ``fluxattn generate``. Every
        request uses ``seed``. ``logits=True`` keeps each step's logits (``Result.logits``).
        ``on_token(index, token)`` is called for every new token as it is sampled."""
        single = isinstance(prompts, str) or _is_ids(prompts)
        batch = [prompts] if single else list(prompts)
        ids = [self._ids(p) for p in batch]
        out = self._core.generate(ids, max_new_tokens, temperature, top_k, top_p, seed, ignore_eos,
                                  [int(t) for t in stop_tokens], logits, on_token)
        results = [_result(r, out["timing"]) for r in out["results"]]
        return results[0] if single else results

    def add(
        self,
        prompt: Prompt,
        *,
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int = 0,
        ignore_eos: bool = False,
        stop_tokens: Sequence[int] = (),
        logits: bool = False,
        routing: str = "",
        hints: Optional[Mapping[str, str]] = None,
        wait_for_kv: bool = False,
    ) -> int:
        """Queues a request for the next :meth:`step`; returns its id. ``routing`` names a
        ``[routers.<name>]`` policy ("" for ``[router]``); ``hints`` reach the routing policy."""
        return self._core.add(self._ids(prompt), max_new_tokens, temperature, top_k, top_p, seed,
                              ignore_eos, [int(t) for t in stop_tokens], logits, routing,
                              {str(k): str(v) for k, v in (hints or {}).items()}, wait_for_kv)

    def step(self) -> StepResult:
        """Runs one step: prefills the queued requests and decodes one token of each running one."""
        d = self._core.step()
        return StepResult(
            tokens=list(d["tokens"]),
            finished=[_result(r) for r in d["finished"]],
            failed=list(d["failed"]),
            prefill_tokens=d["prefill_tokens"],
            decode_tokens=d["decode_tokens"],
            seconds=d["seconds"],
        )

    def cancel(self, request_id: int) -> bool:
        """Drops a queued or running request; False when the id is unknown."""
        return self._core.cancel(request_id)

    def __repr__(self) -> str:
        info = self.model_info
        return f"Engine({self._core.config_path or self._core.model_dir!r}, {info.architecture}, {info.num_layers} layers)"


def _threads(threads: Optional[int]) -> int:
    return -1 if threads is None else int(threads)


def _is_ids(prompt: Any) -> bool:
    if isinstance(prompt, np.ndarray):
        return prompt.ndim == 1
    if isinstance(prompt, (list, tuple)):
        return len(prompt) > 0 and all(isinstance(t, (int, np.integer)) for t in prompt)
    return False


def _csv(value: Union[str, Iterable[Any]]) -> str:
    return value if isinstance(value, str) else ",".join(str(v) for v in value)


# --------------------------------------------------------------------------------------------
# eval, compare, plugins


def eval(
    config: Union[str, "os.PathLike[str]"],
    *,
    tasks: Union[str, Iterable[str]] = "all",
    lengths: Union[str, Iterable[Union[int, str]]] = "1k",
    samples: int = 5,
    seed: int = 0,
    threads: Optional[int] = None,
    details: bool = False,
    progress: Optional[bool] = None,
    plugin_paths: Iterable[str] = (),
) -> List[Dict[str, Any]]:
    """``fluxattn eval``: the built-in long-context suite on one config. Returns the rows the CLI
    writes with ``--json`` (its ``results``). ``progress``: draw the CLI's bar on stderr (None:
    when stderr is a terminal)."""
    text = _core.eval(_os.fspath(config), _csv(tasks), _csv(lengths), samples, seed,
                      _threads(threads), details, progress, list(plugin_paths))
    return _json.loads(text)


def compare(
    configs: Sequence[Union[str, "os.PathLike[str]"]],
    *,
    tasks: Union[str, Iterable[str]] = "all",
    lengths: Union[str, Iterable[Union[int, str]]] = "1k",
    samples: int = 3,
    seed: int = 0,
    decode_tokens: int = 16,
    repeats: int = 3,
    threads: Optional[int] = None,
    progress: Optional[bool] = None,
    plugin_paths: Iterable[str] = (),
) -> Dict[str, Any]:
    """``fluxattn compare``: eval and bench of several configs. Returns what the CLI writes to
    compare.json (``rows`` is the side-by-side table; the first config is the baseline)."""
    text = _core.compare([_os.fspath(c) for c in configs], _csv(tasks), _csv(lengths), samples,
                         seed, decode_tokens, repeats, _threads(threads), progress,
                         list(plugin_paths))
    return _json.loads(text)


def list_plugins(paths: Iterable[str] = ()) -> Dict[str, Any]:
    """The plugins found in ``paths``, ``FLUXATTN_PLUGIN_PATH`` and the package's own folder, as
    ``fluxattn plugins --json`` lists them (``search_path``, ``plugins``, ``failures``)."""
    return _core.list_plugins(list(paths))


# --------------------------------------------------------------------------------------------
# Routing policies in Python


class RoutingPolicy:
    """Base class for routing policies written in Python (subclassing it is optional).

    A policy class has:

    * ``params``: a dict of parameter names to defaults (bool, int, float, str); the TOML table's
      keys are checked against it like a C++ plugin's and passed to the constructor as keywords;
    * ``needs_queries``: what ``decide`` reads of the queries: True (``queries`` and
      ``pooled_queries``), ``"pooled"`` (only ``pooled_queries``, no copy of every row) or False
      (neither);
    * ``prepare(model_info)``: called once with the :class:`ModelInfo` before any decision;
    * ``decide(batch)``: called once per layer at prefill with a :class:`PolicyBatch`; returns
      one choice per request of ``batch.requests``: ``"full"``, ``"sparse"``, a bool (True:
      sparse) or a ``(choice, logits)`` pair whose logits go to the trace.

    Name it in TOML as ``[router] plugin = "python:module.Class"`` (the module is imported), or
    ``"python:<name>"`` after :func:`register_policy`.
    """

    params: Dict[str, Any] = {}
    needs_queries: Union[bool, str] = True

    def prepare(self, model_info: ModelInfo) -> None:
        self.model_info = model_info

    def decide(self, batch: PolicyBatch) -> Sequence[Any]:
        raise NotImplementedError("a routing policy must define decide(batch)")


_registered: Dict[str, Any] = {}


def register_policy(name: str, policy_class: Any) -> None:
    """Makes ``policy_class`` available to configs as ``plugin = "python:<name>"`` (for classes
    defined in a notebook or script, which have no importable module path)."""
    if not callable(policy_class):
        raise TypeError(f"register_policy({name!r}): expected a class, found {policy_class!r}")
    _registered[name] = policy_class


def _resolve_policy(name: str) -> Any:
    if name in _registered:
        return _registered[name]
    module_name, dot, attr = name.rpartition(".")
    if not dot:
        raise LookupError(f"no policy registered as '{name}' and no module.Class path")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise LookupError(f"module '{module_name}' has no attribute '{attr}'") from None


_core._set_policy_resolver(_resolve_policy)


def time_policy(policy: Any, *, requests: int = 1, rows: int = 256, heads: int = 4,
                head_dim: int = 64, iterations: int = 1000) -> float:
    """Seconds per decide() call of a policy instance driven from C++ exactly as the engine
    drives it (GIL taken, batch and NumPy arrays built, answers parsed), over a synthetic batch.
    For measuring a policy's per-layer overhead."""
    return _core._time_decide_batch(policy, requests, rows, heads, head_dim, iterations)
