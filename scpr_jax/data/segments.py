"""Segments of D_tau: valid starts, pair sampling, on-device gathering.

A segment sigma of length L is named by its start row i: rows i, ..., i + L - 1 of a
stream-major `Trajectories`. Preference data keeps only these indices; observations are
gathered on the device when a batch needs them.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from scpr_jax.data.types import Trajectories


@partial(jax.jit, static_argnames="segment_len")
def valid_starts(trajs: Trajectories, segment_len: int) -> jax.Array:
    """Rows where an L-step segment stays in one stream and one episode [N] bool.

    An episode may end on the segment's last step (its final transition is still a valid
    step), but not before it.
    """
    n = trajs.size
    if n % trajs.n_streams:
        raise ValueError(f"{n} rows do not split into n_streams={trajs.n_streams} streams")
    stream_len = n // trajs.n_streams
    if not 1 <= segment_len <= stream_len:
        raise ValueError(f"segment_len={segment_len} must be in [1, {stream_len}] (stream length)")
    rows = jnp.arange(n)
    done = jnp.logical_or(trajs.terminated, trajs.truncated).astype(jnp.int32)
    ends_before = jnp.concatenate([jnp.zeros(1, jnp.int32), jnp.cumsum(done)])  # [N + 1]
    # episode ends among rows i .. i + L - 2 (exact in int32, unlike a float prefix sum)
    inner_ends = ends_before[jnp.minimum(rows + segment_len - 1, n)] - ends_before[rows]
    return (rows % stream_len + segment_len <= stream_len) & (inner_ends == 0)


@partial(jax.jit, static_argnames="shape")
def _uniform_true(key: jax.Array, mask: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Indices drawn uniformly among the True entries of mask [N] -> [*shape] int32."""
    count = jnp.cumsum(mask)  # count[i] = number of True entries in mask[: i + 1]
    k = jax.random.randint(key, shape, 0, count[-1])  # the k-th True entry, 0-based
    return jnp.searchsorted(count, k, side="right").astype(jnp.int32)


def sample_pairs(
    key: jax.Array, trajs: Trajectories, n_sets: int, n_pairs: int, segment_len: int
) -> tuple[jax.Array, jax.Array]:
    """Uniformly drawn valid segment starts (starts1, starts2), each [n_sets, n_pairs] int32."""
    valid = valid_starts(trajs, segment_len)
    if not bool(valid.any()):
        raise ValueError(
            f"no valid segment of segment_len={segment_len}: every window crosses an episode "
            "or stream boundary"
        )
    starts = _uniform_true(key, valid, (2, n_sets, n_pairs))
    return starts[0], starts[1]


def segment(x: jax.Array, start: jax.Array, segment_len: int) -> jax.Array:
    """Rows start .. start + L - 1 of a per-row array x [N, ...] -> [L, ...]."""
    return jax.lax.dynamic_slice_in_dim(x, start, segment_len, axis=0)


def gather_segments(x: jax.Array, starts: jax.Array, segment_len: int) -> jax.Array:
    """Segments of a per-row array for any batch of starts [...] -> [..., L, ...]."""
    flat = jax.vmap(segment, in_axes=(None, 0, None))(x, starts.reshape(-1), segment_len)
    return flat.reshape(*starts.shape, *flat.shape[1:])


def encoder_inputs(
    obs: jax.Array, starts1: jax.Array, starts2: jax.Array, y: jax.Array, segment_len: int
) -> jax.Array:
    """Per-step encoder features [s1_t, s2_t, y] of one preference set.

    obs: [N, obs] goal-stripped observations; starts1, starts2, y: [n_pairs].
    Returns [n_pairs, L, 2 * obs + 1].
    """
    sigma1 = gather_segments(obs, starts1, segment_len)
    sigma2 = gather_segments(obs, starts2, segment_len)
    label = jnp.broadcast_to(y[:, None, None], (*sigma1.shape[:2], 1)).astype(obs.dtype)
    return jnp.concatenate([sigma1, sigma2, label], axis=-1)
