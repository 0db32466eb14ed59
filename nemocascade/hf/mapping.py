"""Declarative tables between our params and a Hugging Face checkpoint, and the engine that applies them.

A *family* (one per Hugging Face architecture: ``qwen3_moe``, ``nemotron_h``) is a config translation plus a
table of ``Rule``s: one rule per parameter of ours, keyed by the *part* of a layer it belongs to (a layer of
kind ``"attention+moe"`` has the parts ``attention`` and ``moe``; Nemotron-H's single-mixer layers have one
part each, e.g. ``mamba``), plus the rules outside the layers.

A rule names our parameter (a ``/``-joined path, ``{i}`` = layer index), the Hugging Face tensor (a name
template, ``{i}`` = layer index, ``{e}`` = expert index for per-expert tensors stacked along our leading
axis) and the ``Layout`` that turns one into the other. Several params of ours may be consecutive row blocks
of one Hugging Face tensor (``hf_rows``: Nemotron-H's fused Mamba-2 ``in_proj``): read as slices, written
concatenated. The engine checks a checkpoint against the table
from the headers alone (every missing, unexpected or misshapen tensor is named) before it reads any data,
then moves one parameter at a time: read (memory-mapped), re-lay out, place on the mesh, drop.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from nemocascade.hf.safetensors_io import CheckpointReader, TensorSpec
from nemocascade.model import init_params
from nemocascade.model.config import ModelConfig
from nemocascade.sharding import to_host


@dataclasses.dataclass(frozen=True)
class Layout:
    """How a Hugging Face array maps to ours.

    ``in_dims=None``: the same array (norm scales, the embedding). ``in_dims=n``: a linear weight; Hugging
    Face stores ``[out, in]`` (``y = x @ W.T``), ours has ``n`` input axes then the output axes (e.g. wq
    ``[D, H, Dh]`` has n=1, wo ``[H, Dh, D]`` has n=2), so ``ours = W.T.reshape(our shape)``.
    """

    in_dims: int | None = None

    def hf_shape(self, ours: Sequence[int]) -> tuple[int, ...]:
        if self.in_dims is None:
            return tuple(ours)
        return math.prod(ours[self.in_dims:]), math.prod(ours[:self.in_dims])

    def to_ours(self, hf: np.ndarray, ours_shape: Sequence[int]) -> np.ndarray:
        return hf if self.in_dims is None else hf.T.reshape(ours_shape)

    def to_hf(self, ours: np.ndarray) -> np.ndarray:
        if self.in_dims is None:
            return ours
        return ours.reshape(math.prod(ours.shape[:self.in_dims]), -1).T


class Flat(Layout):
    """Hugging Face stores our multi-axis array flattened to one axis (e.g. a norm scale ``[H, P]`` as ``[H*P]``)."""

    def hf_shape(self, ours: Sequence[int]) -> tuple[int, ...]:
        return (math.prod(ours),)

    def to_ours(self, hf: np.ndarray, ours_shape: Sequence[int]) -> np.ndarray:
        return hf.reshape(ours_shape)

    def to_hf(self, ours: np.ndarray) -> np.ndarray:
        return ours.reshape(-1)


class DepthwiseConv(Layout):
    """A depthwise ``torch.nn.Conv1d`` weight ``[C, 1, K]`` (``groups=C``) <-> ours ``[K, C]``."""

    def hf_shape(self, ours: Sequence[int]) -> tuple[int, ...]:
        return ours[1], 1, ours[0]

    def to_ours(self, hf: np.ndarray, ours_shape: Sequence[int]) -> np.ndarray:
        return hf[:, 0, :].T.reshape(ours_shape)

    def to_hf(self, ours: np.ndarray) -> np.ndarray:
        return ours.T[:, None, :]


COPY = Layout()
LINEAR = Layout(in_dims=1)
LINEAR_FROM_HEADS = Layout(in_dims=2)
FLAT = Flat()
DEPTHWISE_CONV = DepthwiseConv()


@dataclasses.dataclass(frozen=True)
class Rule:
    """One parameter of ours <-> Hugging Face tensor(s).

    Attributes:
      ours: our parameter path, ``/``-joined (``"layer_{i}/attention/wq"``); None for a Hugging Face tensor
        that may be present but is never read nor written (e.g. ``lm_head.weight`` of a tied checkpoint).
      hf: the Hugging Face name template; None for a parameter of ours that the format lacks: it is set
        to ``fill`` on import and must equal ``fill`` everywhere on export.
      layout: see ``Layout`` (per expert slice when ``per_expert``).
      per_expert: our leading axis stacks one Hugging Face tensor per expert (``{e}`` in ``hf``).
      fill: the value of a parameter without a Hugging Face tensor.
      hf_rows: ``(start, stop, total)``: ours is rows ``[start, stop)`` (axis 0, a linear weight's output
        axis) of the ``total``-row tensor ``hf``, laid out by ``layout``; the rules naming that tensor must
        tile its rows. None: ours is the whole tensor.
    """

    ours: str | None
    hf: str | None
    layout: Layout = COPY
    per_expert: bool = False
    fill: float = 0.0
    hf_rows: tuple[int, int, int] | None = None

    def at_layer(self, i: int) -> "Rule":
        return dataclasses.replace(self, ours=self.ours and self.ours.replace("{i}", str(i)),
                                   hf=self.hf and self.hf.replace("{i}", str(i)))

    def hf_names(self, num_experts: int) -> list[str]:
        if self.hf is None:
            return []
        return [self.hf.format(e=e) for e in range(num_experts)] if self.per_expert else [self.hf]

    def path(self) -> tuple[str, ...]:
        return tuple(self.ours.split("/"))

    def hf_shape(self, ours: Sequence[int]) -> tuple[int, ...]:
        """The shape of the (whole) Hugging Face tensor, from our parameter's (per-expert slice) shape."""
        shape = self.layout.hf_shape(ours)
        return shape if self.hf_rows is None else (self.hf_rows[2], *shape[1:])


# ModelConfig fields that do not change the architecture; a caller may set them on import (any family).
RUNTIME_FIELDS = ("dtype", "param_dtype", "max_seq_len", "moe_impl", "kernel_impl", "remat", "logits_chunk_size",
                  "aux_loss_weight", "router_z_loss_weight")
# config.json keys that carry no architecture in any family: token ids, training-only switches, bookkeeping.
BOOKKEEPING_KEYS = frozenset({
    "attention_dropout", "bos_token_id", "eos_token_id", "pad_token_id", "dtype", "torch_dtype", "use_cache",
    "initializer_range", "output_router_logits", "transformers_version", "_name_or_path", "output_attentions",
    "output_hidden_states", "return_dict", "use_return_dict", "chunk_size_feed_forward", "is_encoder_decoder",
    "id2label", "label2id", "problem_type", "tokenizer_class", "tie_encoder_decoder", "pruned_heads",
})


def check_hf_keys(hf: Mapping, overrides: Mapping, read_keys, fail: Callable[[str], None]) -> None:
    """Refuses ModelConfig ``overrides`` outside ``RUNTIME_FIELDS``, quantized checkpoints, and every
    config.json key that is neither read (``read_keys``) nor bookkeeping, so that a checkpoint with a feature
    we lack is never loaded as something else. ``fail(message)`` raises, naming the format."""
    bad_overrides = sorted(set(overrides) - set(RUNTIME_FIELDS))
    if bad_overrides:
        raise ValueError(f"cannot override {bad_overrides} on import: they are fixed by config.json; "
                         f"overridable: {list(RUNTIME_FIELDS)}")
    if "quantization_config" in hf:
        fail("quantization_config is set: quantized checkpoints are not supported (use the BF16 weights)")
    unknown = sorted(set(hf) - set(read_keys) - BOOKKEEPING_KEYS)
    if unknown:
        fail(f"unsupported key(s) {unknown}; known keys: {sorted(read_keys)}")


def check_fixed_values(hf: Mapping, fixed, fail: Callable[[str], None]) -> None:
    """Each ``(key, value)`` of ``fixed``: config.json must have that value or lack the key."""
    for key, allowed in fixed:
        if hf.get(key, allowed) != allowed:
            fail(f"{key}={hf[key]!r} is not supported (expected {allowed!r})")


def check_writable(cfg: ModelConfig, fixed, fmt: str) -> None:
    """Each ``(field, value)`` of ``fixed``: ``cfg`` must have the value the format ``fmt`` has."""
    for field, value in fixed:
        if getattr(cfg, field) != value:
            raise ValueError(f"ModelConfig.{field}={getattr(cfg, field)!r} cannot be written as {fmt} "
                             f"(which has {value!r})")


@dataclasses.dataclass(frozen=True)
class Family:
    """A Hugging Face architecture: config translation and the tensor table.

    Attributes:
      name: our key (``"qwen3_moe"``), also Hugging Face's ``model_type``.
      architectures: the ``config.json`` ``architectures`` it reads and writes.
      config_from_hf: ``(config.json dict, **ModelConfig overrides) -> ModelConfig``; rejects what it
        cannot express, naming the key.
      config_to_hf: ``(ModelConfig, base config.json dict or None, dtype name) -> config.json dict``.
      rules: ``ModelConfig -> [Rule]``, usually ``table_rules(cfg, top, parts)``.
    """

    name: str
    architectures: tuple[str, ...]
    config_from_hf: Callable[..., ModelConfig]
    config_to_hf: Callable[[ModelConfig, Mapping | None, str], dict]
    rules: Callable[[ModelConfig], list[Rule]]


def table_rules(cfg: ModelConfig, top: Sequence[Rule], parts: Mapping[str, Sequence[Rule]]) -> list[Rule]:
    """``top`` rules, then per layer ``i`` the rules of each part of its kind (``"attention+moe"`` ->
    ``parts["attention"]`` and ``parts["moe"]``) with ``{i}`` filled in."""
    rules = list(top)
    for i, kind in enumerate(cfg.layer_kinds):
        for part in kind.split("+"):
            if part not in parts:
                raise ValueError(f"layer {i} is of kind {kind!r}, whose part {part!r} this format has no "
                                 f"tensors for (it has {sorted(parts)})")
            rules.extend(rule.at_layer(i) for rule in parts[part])
    return rules


def param_shapes(cfg: ModelConfig):
    """Our params as a pytree of ``jax.ShapeDtypeStruct`` (nothing is allocated)."""
    return jax.eval_shape(lambda r: init_params(cfg, r), jax.random.PRNGKey(0))


def _leaf(tree, path: tuple[str, ...]):
    for key in path:
        tree = tree[key]
    return tree


def _leaf_paths(tree) -> set[tuple[str, ...]]:
    return {tuple(str(k.key) for k in path) for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]}


def check_rules_cover(rules: Sequence[Rule], shapes, family: str) -> None:
    """Every parameter of ours has exactly one rule (else the family cannot express this ModelConfig)."""
    ruled = [r.path() for r in rules if r.ours is not None]
    params = _leaf_paths(shapes)
    uncovered = sorted("/".join(p) for p in params - set(ruled))
    if uncovered:
        raise ValueError(f"the {family} format has no tensor for parameter(s) {uncovered[:5]} of this model "
                         f"config")
    unknown = sorted("/".join(p) for p in set(ruled) - params)
    doubled = sorted({"/".join(p) for p in ruled if ruled.count(p) > 1})
    if unknown or doubled:
        raise ValueError(f"{family} table: rules for absent params {unknown[:5]} or repeated {doubled[:5]}")
    _check_row_splits(rules, shapes, family)


def _check_row_splits(rules: Sequence[Rule], shapes, family: str) -> None:
    """The ``hf_rows`` rules of each tensor tile its rows exactly, each block as tall as its parameter."""
    blocks: dict[str, list[Rule]] = {}
    for rule in rules:
        if rule.hf_rows is not None:
            if rule.per_expert or rule.ours is None:
                raise ValueError(f"{family} table: row-split rule for {rule.hf} must name one plain parameter")
            blocks.setdefault(rule.hf, []).append(rule)
    for name, parts in blocks.items():
        spans = sorted(r.hf_rows for r in parts)
        starts = [0] + [stop for _, stop, _ in spans[:-1]]
        heights = {r.hf_rows[1] - r.hf_rows[0] == r.layout.hf_shape(_leaf(shapes, r.path()).shape)[0] for r in parts}
        if [s[0] for s in spans] != starts or {s[2] for s in spans} != {spans[-1][1]} or heights != {True}:
            raise ValueError(f"{family} table: the row blocks {spans} of {name} do not tile its rows")


def check_checkpoint(reader: CheckpointReader, rules: Sequence[Rule], shapes, cfg: ModelConfig) -> None:
    """From the headers only: every expected tensor is there with the right shape, nothing else is."""
    expected: dict[str, tuple[tuple[int, ...], str]] = {}
    optional = set()
    for rule in rules:
        if rule.ours is None:
            optional.update(rule.hf_names(cfg.num_experts))
            continue
        shape = _leaf(shapes, rule.path()).shape
        inner = shape[1:] if rule.per_expert else shape
        for name in rule.hf_names(cfg.num_experts):
            expected[name] = (rule.hf_shape(inner), rule.ours)
    present = set(reader.names())
    missing = sorted(set(expected) - present)
    if missing:
        raise ValueError(f"{reader.directory}: checkpoint lacks tensor(s) {_some(missing)} that the config needs")
    unexpected = sorted(present - set(expected) - optional)
    if unexpected:
        raise ValueError(f"{reader.directory}: checkpoint has tensor(s) {_some(unexpected)} that the config does "
                         f"not use (does config.json match the weights?)")
    for name, (shape, ours) in expected.items():
        info = reader.info(name)
        if info.shape != shape:
            raise ValueError(f"{reader.directory}: tensor {name!r} has shape {list(info.shape)}, expected "
                             f"{list(shape)} (for our parameter {ours} of the config in config.json)")
        if not jnp.issubdtype(info.dtype, jnp.floating):
            raise ValueError(f"{reader.directory}: tensor {name!r} has dtype {info.dtype}, expected a float type")


def _some(names: list[str], shown: int = 8) -> str:
    return f"{names[:shown]}" + (f" and {len(names) - shown} more" if len(names) > shown else "")


def _host_value(reader: CheckpointReader, rule: Rule, shape, dtype, num_experts: int) -> np.ndarray:
    """Our parameter as one host array (the only tensor held in host RAM at this moment)."""
    if rule.hf is None:
        return np.full(shape, rule.fill, dtype)
    if not rule.per_expert:
        hf = reader.read(rule.hf)
        if rule.hf_rows is not None:
            hf = hf[rule.hf_rows[0]:rule.hf_rows[1]]
        return np.asarray(rule.layout.to_ours(hf, shape), dtype)
    out = np.empty(shape, dtype)
    for e, name in enumerate(rule.hf_names(num_experts)):
        out[e] = rule.layout.to_ours(reader.read(name), shape[1:])
    return out


def load_params(reader: CheckpointReader, family: Family, cfg: ModelConfig, shardings):
    """Our params from ``reader``'s tensors, each placed with its ``shardings`` leaf (a params-shaped pytree
    of ``jax.sharding.Sharding``) as soon as it is read; cast to ``cfg.param_dtype``."""
    shapes = param_shapes(cfg)
    rules = family.rules(cfg)
    check_rules_cover(rules, shapes, family.name)
    check_checkpoint(reader, rules, shapes, cfg)
    placed = {}
    for rule in rules:
        if rule.ours is None:
            continue
        target = _leaf(shapes, rule.path())
        host = _host_value(reader, rule, target.shape, target.dtype, cfg.num_experts)
        placed[rule.path()] = jax.make_array_from_callback(target.shape, _leaf(shardings, rule.path()),
                                                          lambda index, h=host: h[index])
        del host
    return jax.tree_util.tree_map_with_path(lambda p, _: placed[tuple(str(k.key) for k in p)], shapes)


def export_specs(params, family: Family, cfg: ModelConfig, dtype) -> list[TensorSpec]:
    """The Hugging Face tensors of ``params`` as ``TensorSpec``s (in table order), each fetched from the
    devices only when written (a per-expert stack once, for its experts' tensors), cast to ``dtype``.
    Write them in order: host RAM then holds one parameter at a time."""
    dtype = np.dtype(dtype)
    rules = family.rules(cfg)
    check_rules_cover(rules, param_shapes(cfg), family.name)
    specs, joined = [], set()
    for rule in rules:
        if rule.ours is None:
            continue
        leaf = _leaf(params, rule.path())
        if rule.hf is None:
            if not np.all(to_host(leaf) == rule.fill):
                raise ValueError(f"parameter {rule.ours} is not {rule.fill} everywhere, but the {family.name} "
                                 f"format has no tensor for it")
            continue
        if rule.hf_rows is not None:
            if rule.hf not in joined:
                joined.add(rule.hf)
                specs.append(_joined_spec(params, [r for r in rules if r.hf == rule.hf], dtype))
            continue
        if rule.per_expert:
            stack = _StackOnHost(leaf, cfg.num_experts)
            inner = rule.layout.hf_shape(leaf.shape[1:])
            specs.extend(TensorSpec(name, dtype, inner,
                                    lambda e=e, stack=stack, rule=rule: _hf_array(stack.take(e), rule.layout, dtype))
                         for e, name in enumerate(rule.hf_names(cfg.num_experts)))
        else:
            specs.append(TensorSpec(rule.hf, dtype, rule.layout.hf_shape(leaf.shape),
                                    lambda leaf=leaf, rule=rule: _hf_array(to_host(leaf), rule.layout, dtype)))
    return specs


def _joined_spec(params, parts: Sequence[Rule], dtype: np.dtype) -> TensorSpec:
    """One Hugging Face tensor written as the row blocks of several params of ours (``Rule.hf_rows``)."""
    parts = sorted(parts, key=lambda r: r.hf_rows)
    leaves = [_leaf(params, r.path()) for r in parts]

    def produce():
        return np.concatenate([_hf_array(to_host(leaf), r.layout, dtype) for leaf, r in zip(leaves, parts)])
    return TensorSpec(parts[0].hf, dtype, parts[0].hf_shape(leaves[0].shape), produce)


class _StackOnHost:
    """A per-expert stacked parameter fetched to the host once (one gather, no per-expert device slicing) for
    its ``num_experts`` tensors, and released when the last of them has been taken."""

    def __init__(self, leaf, num_experts: int):
        self._leaf, self._left, self._host = leaf, num_experts, None

    def take(self, e: int) -> np.ndarray:
        if self._host is None:
            self._host = to_host(self._leaf)
        out = self._host[e]
        self._left -= 1
        if self._left == 0:
            self._host = None
        return out


def _hf_array(value: np.ndarray, layout: Layout, dtype: np.dtype) -> np.ndarray:
    return np.ascontiguousarray(layout.to_hf(value).astype(dtype))
