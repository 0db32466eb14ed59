"""Every loss under jax.jit, jax.vmap and with inputs sharded on an 8-device mesh; the package docs example
runs and learns; the package stays a leaf that imports only jax/numpy."""
import ast
import pathlib
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

import nemocascade.losses as losses
from losses_testing import assert_close, logprobs, response_mask

B, T, V, G = 8, 6, 11, 4


def _cases(batch=B, seed=0):
    """name -> (function of arrays only, its positional array arguments with the batch axis first)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(batch, T, V)).astype(np.float32)
    targets = rng.integers(0, V, size=(batch, T)).astype(np.int32)
    mask = response_mask(rng, batch, T)
    lp, old, teacher, ref_lp = (logprobs(rng, (batch, T)) for _ in range(4))
    advantages = rng.normal(size=batch).astype(np.float32)
    pairs = [rng.normal(size=batch).astype(np.float32) for _ in range(4)]
    return {
        "token_logprobs": (lambda x, y: losses.token_logprobs(x, y, chunk_size=4), (logits, targets)),
        "sft_loss": (lambda x, y, m: losses.sft_loss(x, y, m, z_loss=1e-3, chunk_size=4), (logits, targets, mask)),
        "group_advantages": (lambda r: losses.group_advantages(r, G), (rng.normal(size=batch * G).astype(np.float32),)),
        "grpo_loss": (lambda x, o, a, m, r: losses.grpo_loss(x, o, a, m, aggregation="seq_mean_token_mean",
                                                             ref_logprobs=r, kl_coef=0.1),
                      (lp, old, advantages, mask, ref_lp)),
        "mopd_advantages": (losses.mopd_advantages, (teacher, old, mask)),
        "mopd_loss": (lambda x, o, t, m: losses.mopd_loss(x, o, t, m, aggregation="seq_mean_token_mean"),
                      (lp, old, teacher, mask)),
        "bradley_terry_loss": (lambda c, r: losses.bradley_terry_loss(c, r, margin=0.1), tuple(pairs[:2])),
        "dpo_loss": (losses.dpo_loss, tuple(pairs)),
    }


def _value_and_grad(function):
    """(outputs, gradient w.r.t. the first argument of a fixed weighted sum of the main output)."""
    def run(*args):
        def scalar(first):
            out = function(first, *args[1:])
            value = out[0] if isinstance(out, tuple) else out
            weights = 1.0 + 0.5 * jnp.sin(jnp.arange(value.size, dtype=value.dtype)).reshape(value.shape)
            return jnp.sum(weights * value), out
        grad, out = jax.grad(scalar, has_aux=True)(args[0])
        return out, grad
    return run


NAMES = list(_cases())


@pytest.mark.parametrize("name", NAMES)
def test_jit_equals_eager(name):
    function, args = _cases()[name]
    eager = _value_and_grad(function)(*args)
    jitted = jax.jit(_value_and_grad(function))(*args)
    jax.tree.map(lambda a, b: assert_close(a, b), jitted, eager)


@pytest.mark.parametrize("name", NAMES)
def test_vmap_over_a_leading_axis_equals_a_loop(name):
    """Stack K=3 independent batches (e.g. micro-batches or ensemble members) and vmap over them."""
    function, _ = _cases()[name]
    batches = [_cases(seed=seed)[name][1] for seed in range(3)]
    stacked = [np.stack(column) for column in zip(*batches)]
    vmapped = jax.vmap(_value_and_grad(function))(*stacked)
    looped = [_value_and_grad(function)(*args) for args in batches]
    expected = jax.tree.map(lambda *leaves: np.stack(leaves), *looped)
    jax.tree.map(lambda a, b: assert_close(a, b), vmapped, expected)


@pytest.mark.parametrize("name", NAMES)
def test_batch_sharded_on_eight_devices_equals_unsharded(name):
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    function, args = _cases()[name]
    sharded = [jax.device_put(a, NamedSharding(mesh, P("data", *([None] * (a.ndim - 1))))) for a in args]
    assert len(sharded[0].sharding.device_set) == 8
    out = jax.jit(_value_and_grad(function))(*sharded)
    jax.tree.map(lambda a, b: assert_close(a, b), out, _value_and_grad(function)(*args))


@pytest.mark.parametrize("chunk_size", [None, 4])
def test_vocab_and_batch_sharded_logits(chunk_size):
    """Tensor-parallel style logits: batch on 'data' (4), vocabulary on 'model' (2)."""
    mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, T, 12)).astype(np.float32)
    targets = rng.integers(0, 12, size=(4, T)).astype(np.int32)
    mask = response_mask(rng, 4, T)

    def loss(x, y, m):
        return losses.sft_loss(x, y, m, z_loss=1e-3, chunk_size=chunk_size)[0]

    sharded = (jax.device_put(logits, NamedSharding(mesh, P("data", None, "model"))),
               jax.device_put(targets, NamedSharding(mesh, P("data"))),
               jax.device_put(mask, NamedSharding(mesh, P("data"))))
    value, grad = jax.jit(jax.value_and_grad(loss))(*sharded)
    expected_value, expected_grad = jax.value_and_grad(loss)(logits, targets, mask)
    assert_close(value, expected_value)
    assert_close(grad, expected_grad)


def test_docs_example_runs_and_learns():
    code = textwrap.dedent(losses.__doc__.split("::\n", 1)[1])
    namespace = {}
    exec(compile(code, "nemocascade.losses docstring", "exec"), namespace)  # noqa: S102 - our own docstring
    policy, student, teacher = namespace["policy"], namespace["student"], namespace["teacher"]
    token3 = jax.nn.softmax(policy["w"])[:, 3]
    assert np.all(np.asarray(token3) > 1.5 / 8)  # GRPO raised the rewarded token from 1/8

    def reverse_kl(params):
        log_student = jax.nn.log_softmax(params["w"])
        return float(jnp.sum(jnp.exp(log_student) * (log_student - jax.nn.log_softmax(teacher["w"]))))

    assert reverse_kl(student) < 0.3 * reverse_kl({"w": jnp.zeros_like(student["w"])})


def test_package_is_a_leaf_importing_only_jax_and_numpy():
    allowed = {"__future__", "functools", "numbers", "typing", "jax", "numpy"}
    package = pathlib.Path(losses.__file__).parent
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                roots = set() if node.level else {node.module.split(".")[0]}
            else:
                continue
            assert roots <= allowed, f"{path.name} imports {roots - allowed}"
