"""Float64 numpy reference of every loss and of its analytic gradient, written with explicit loops.

Independent of the JAX code: no shared helpers, per-sequence Python loops instead of vectorised masks.
Each ``*_grad`` returns d loss / d (the differentiated input); ``finite_difference`` checks them.
"""
from __future__ import annotations

import numpy as np


def log_softmax(logits):
    """[..., V] -> [..., V] float64, max-shifted."""
    x = np.asarray(logits, np.float64)
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def logsumexp(logits):
    x = np.asarray(logits, np.float64)
    top = x.max(axis=-1)
    return top + np.log(np.exp(x - top[..., None]).sum(axis=-1))


def token_logprobs(logits, targets):
    """[B, T, V], [B, T] -> [B, T] float64."""
    return np.take_along_axis(log_softmax(logits), np.asarray(targets)[..., None], axis=-1)[..., 0]


def token_logprobs_grad(logits, targets, upstream):
    """d sum(upstream * lp) / d logits = upstream * (onehot(target) - softmax)."""
    probs = np.exp(log_softmax(logits))
    onehot = np.zeros_like(probs)
    np.put_along_axis(onehot, np.asarray(targets)[..., None], 1.0, axis=-1)
    return np.asarray(upstream, np.float64)[..., None] * (onehot - probs)


def _runs(row_ids):
    """[(start, stop)] of the runs of equal values in ``row_ids``."""
    runs, start = [], 0
    for t in range(1, len(row_ids) + 1):
        if t == len(row_ids) or row_ids[t] != row_ids[start]:
            runs.append((start, t))
            start = t
    return runs


def aggregation_weights(mask, aggregation, segment_ids=None):
    """[B, T] float64 weights w with loss = sum(w * l) for each aggregation, computed row by row; with
    ``segment_ids`` a sequence of ``seq_mean_token_mean`` is a run of equal ids within a row."""
    mask = np.asarray(mask, np.float64)
    batch, length = mask.shape
    weights = np.zeros_like(mask)
    if aggregation == "token_mean":
        total = mask.sum()
        if total > 0:
            weights = mask / total
    elif aggregation == "seq_mean_token_mean":
        spans = [(b, start, stop) for b in range(batch)
                 for start, stop in (_runs(list(segment_ids[b])) if segment_ids is not None else [(0, length)])]
        non_empty = [(b, start, stop) for b, start, stop in spans if mask[b, start:stop].sum() > 0]
        for b, start, stop in non_empty:
            weights[b, start:stop] = mask[b, start:stop] / mask[b, start:stop].sum() / len(non_empty)
    elif aggregation == "seq_mean_token_sum_norm":
        weights = mask / (batch * length)
    else:
        raise ValueError(aggregation)
    return weights


def sft_loss(logits, targets, mask, z_loss):
    """(loss, d loss / d logits)."""
    mask = np.asarray(mask, np.float64)
    total = max(mask.sum(), 1.0)
    lp = np.where(mask > 0, token_logprobs(logits, np.where(mask > 0, targets, 0)), 0.0)
    lse = logsumexp(logits)
    loss = -(mask * lp).sum() / total + z_loss * (mask * lse ** 2).sum() / total
    probs = np.exp(log_softmax(logits))
    grad = token_logprobs_grad(logits, np.where(mask > 0, targets, 0), -mask / total)
    grad += (z_loss * 2.0 * mask * lse / total)[..., None] * probs
    return loss, grad


def group_advantages(rewards, group_size, normalize_std, eps):
    rewards = np.asarray(rewards, np.float64)
    out = np.zeros_like(rewards)
    for start in range(0, len(rewards), group_size):
        group = rewards[start:start + group_size]
        centred = group - group.mean()
        if normalize_std:
            centred = centred / (np.sqrt(((group - group.mean()) ** 2).mean()) + eps)
        out[start:start + group_size] = centred
    return out


def grpo_loss(logprobs, old_logprobs, advantages, mask, eps_low, eps_high, aggregation,
              ref_logprobs=None, kl_coef=0.0, segment_ids=None):
    """(loss, d loss / d logprobs, clip_fraction); the min() surrogate evaluated literally per token."""
    lp = np.asarray(logprobs, np.float64)
    mask = np.asarray(mask, np.float64)
    adv = np.asarray(advantages, np.float64)
    if adv.ndim == 1:
        adv = np.repeat(adv[:, None], lp.shape[1], axis=1)
    weights = aggregation_weights(mask, aggregation, segment_ids)
    loss, grad, clipped_count = 0.0, np.zeros_like(lp), 0.0
    for b in range(lp.shape[0]):
        for t in range(lp.shape[1]):
            if mask[b, t] == 0:
                continue
            ratio = np.exp(lp[b, t] - old_logprobs[b, t])
            a = adv[b, t]
            unclipped = ratio * a
            clipped = min(max(ratio, 1.0 - eps_low), 1.0 + eps_high) * a
            token_loss = -min(unclipped, clipped)
            is_clipped = clipped < unclipped
            token_grad = 0.0 if is_clipped else -a * ratio
            clipped_count += float(is_clipped)
            if ref_logprobs is not None:
                delta = ref_logprobs[b, t] - lp[b, t]
                token_loss += kl_coef * (np.exp(delta) - delta - 1.0)
                token_grad += kl_coef * (1.0 - np.exp(delta))
            loss += weights[b, t] * token_loss
            grad[b, t] = weights[b, t] * token_grad
    return loss, grad, clipped_count / max(mask.sum(), 1.0)


def mopd_loss(logprobs, rollout_logprobs, teacher_logprobs, mask, is_low, is_high, aggregation,
              weight_logprobs=None, segment_ids=None):
    """(loss, d loss / d logprobs, gated_fraction).

    The importance weight is computed from ``weight_logprobs`` (default ``logprobs``) and held constant,
    as the stop_gradient does in the JAX version; finite differences pass the unperturbed log-probs here.
    """
    lp = np.asarray(logprobs, np.float64)
    weight_lp = lp if weight_logprobs is None else np.asarray(weight_logprobs, np.float64)
    mask = np.asarray(mask, np.float64)
    weights = aggregation_weights(mask, aggregation, segment_ids)
    loss, grad, gated = 0.0, np.zeros_like(lp), 0.0
    for b in range(lp.shape[0]):
        for t in range(lp.shape[1]):
            if mask[b, t] == 0:
                continue
            advantage = teacher_logprobs[b, t] - rollout_logprobs[b, t]
            ratio = np.exp(weight_lp[b, t] - rollout_logprobs[b, t])
            weight = ratio if is_low <= ratio <= is_high else 0.0
            gated += float(weight == 0.0)
            loss += weights[b, t] * (-weight * advantage * lp[b, t])
            grad[b, t] = weights[b, t] * (-weight * advantage)
    return loss, grad, gated / max(mask.sum(), 1.0)


def log_sigmoid(x):
    x = np.asarray(x, np.float64)
    return np.where(x >= 0, -np.log1p(np.exp(-np.abs(x))), x - np.log1p(np.exp(-np.abs(x))))


def sigmoid(x):
    return np.exp(log_sigmoid(x))


def bradley_terry_loss(chosen, rejected, margin):
    """(loss, d/d chosen, d/d rejected)."""
    chosen, rejected = np.asarray(chosen, np.float64), np.asarray(rejected, np.float64)
    z = chosen - rejected - margin
    n = len(chosen)
    loss = -log_sigmoid(z).mean()
    d_z = -(1.0 - sigmoid(z)) / n
    return loss, d_z, -d_z


def dpo_loss(pc, pr, rc, rr, beta):
    """(loss, d/d pc, d/d pr)."""
    z = beta * ((np.asarray(pc, np.float64) - rc) - (np.asarray(pr, np.float64) - rr))
    loss = -log_sigmoid(z).mean()
    d_z = -(1.0 - sigmoid(z)) / len(z)
    return loss, beta * d_z, -beta * d_z


def finite_difference(function, x, step=1e-6):
    """Central differences of scalar ``function`` at float64 ``x`` (same shape as x)."""
    x = np.array(x, np.float64)
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[index] += step
        minus[index] -= step
        grad[index] = (function(plus) - function(minus)) / (2 * step)
    return grad
