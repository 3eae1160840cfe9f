"""Online TD3 of pi_h: buffer and warm-up, oracle reward, seed vmap, resume, a learning probe."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scpr_jax import methods
from scpr_jax import skill as hl
from scpr_jax.downstream import online
from scpr_jax.downstream.offline import act
from scpr_jax.envs import make, make_task
from scpr_jax.evaluation import downstream_returns_fn

ENV = "ball-run/downstream"
TASK = make_task("ball-run")
IDENTITY = hl.identity_skill(TASK.obs_size, TASK.action_size)
EPISODE = TASK.max_steps  # 250: Ball-Run never terminates early


# compiling dominates these tests (tiny programs, few steps): skip most XLA passes
pytestmark = pytest.mark.usefixtures("fast_compile")


def tiny_config(method="task-only", **overrides):
    """2 envs, chunks of 500 transitions (one full episode per env), 2 chunks, wrapping buffer."""
    cfg = methods.online_config("small", "ball-run", method).unlock()
    cfg.hidden, cfg.batch_size, cfg.n_envs, cfg.chunk, cfg.steps = (16,), 32, 2, 500, 1000
    cfg.warmup_steps, cfg.buffer_size, cfg.eval_every = 300, 600, 0
    for name, value in overrides.items():
        cfg[name] = value
    return cfg.lock()


@functools.cache
def first_chunk(cost_weight=0.0):
    """(initial loop, loop after one jitted chunk, chunk metrics) of `tiny_config`; memoised
    (states are immutable) because every `init_loop` call compiles its initialiser anew."""
    cfg = tiny_config()
    loop = online.initial_loop(jax.random.PRNGKey(0), ENV, IDENTITY, cfg, cost_weight=cost_weight)
    chunk = jax.jit(online.online_chunk(ENV, cfg))
    after, metrics = chunk(loop, IDENTITY)
    return loop, after, jax.device_get(metrics)


def rows(replay_field, env_index):
    """The [T] (or [T, ...]) rows of one env copy: transition t of copy j is row 2 t + j."""
    return np.asarray(replay_field)[env_index::2]


def test_one_chunk_fills_buffer_with_final_obs_semantics_and_random_warmup():
    loop, after, m = first_chunk()
    s, replay = after.algo, after.algo.replay
    assert int(after.step) == 500 and int(s.t) == EPISODE
    # updates run from the first policy step (t = 150) on, n_envs = 2 per vectorised step
    assert int(s.td3.step) == 2 * (EPISODE - 150) == m["updates"]
    written = np.any(np.asarray(replay.obs) != 0, axis=-1)
    assert written[:500].all() and not written[500:].any()
    for j in range(2):
        obs, next_obs = rows(replay.obs, j)[:EPISODE], rows(replay.next_obs, j)[:EPISODE]
        np.testing.assert_array_equal(next_obs[:-1], obs[1:])  # consecutive steps chain
        # the episode ended at its last step: next_obs is its final obs, not the reset obs
        assert not np.allclose(next_obs[-1], s.obs[j])
        np.testing.assert_array_equal(obs[0], loop.algo.obs[j])
    # episode statistics: each copy finished exactly one episode in this chunk
    assert m["episodes"] == 2
    returns = [rows(replay.reward, j)[:EPISODE].sum() for j in range(2)]
    costs = [rows(replay.cost, j)[:EPISODE].sum() for j in range(2)]
    np.testing.assert_allclose(m["episode_return"], np.mean(returns), rtol=1e-4)
    np.testing.assert_allclose(m["episode_cost"], np.mean(costs), rtol=1e-6)
    assert not np.any(replay.terminated)  # truncations are not terminations
    # warm-up (the first 300 transitions): uniform in [-1, 1], unrelated to the initial policy
    warm = np.asarray(replay.action[:300])
    assert np.all(np.abs(np.asarray(replay.action[:500])) <= 1.0)
    assert abs(warm.mean()) < 0.1 and 0.5 < warm.std() < 0.65  # U[-1, 1]: 0, 1/sqrt(3)
    a_pi = act(loop.algo.td3, IDENTITY, replay.obs[:300])
    assert np.mean(np.abs(warm - np.asarray(a_pi))) > 0.3


def test_second_chunk_wraps_the_ring_buffer():
    cfg = tiny_config()
    _, after, _ = first_chunk()
    chunk = jax.jit(online.online_chunk(ENV, cfg))  # cached: the same compiled program
    again, _ = chunk(after, IDENTITY)
    old, new = np.asarray(after.algo.replay.obs), np.asarray(again.algo.replay.obs)
    # transitions 500..599 fill rows 500..599, 600..999 overwrite rows 0..399
    assert np.any(new[500:] != 0, axis=-1).all()
    assert not np.any(np.all(new[:400] == old[:400], axis=-1))
    np.testing.assert_array_equal(new[400:500], old[400:500])


def linear_cpl_skill(prior_std):
    """A latent skill a = tanh(z'), z' = prior_std * u (the observation is ignored)."""
    kernel = np.concatenate([np.zeros((TASK.obs_size, 2)), np.eye(2)]).astype(np.float32)
    net = {"params": {"MLP_0": {"Dense_0": {"kernel": kernel, "bias": np.zeros(2, np.float32)}}}}
    return hl.Skill(
        params={"params": net["params"]["MLP_0"]},  # the decoder's MLP (`cpl.cpl_skill`)
        prior_mean=jnp.zeros(2),
        prior_std=jnp.full(2, prior_std),
        kind="cpl",
        obs_size=TASK.obs_size,
        n_actions=2,
        activation="leaky_relu",
    )


def test_latent_warmup_draws_clipped_gaussian_u_and_policy_adds_noise():
    skill = linear_cpl_skill(0.1)
    cfg = tiny_config(method="safe-cpl", hidden=(8,))
    state = online.online_init(jax.random.PRNGKey(0), make(ENV), skill, cfg)
    obs = jax.random.normal(jax.random.PRNGKey(1), (4000, make(ENV).obs_size))
    key = jax.random.PRNGKey(2)
    a = online.behaviour_action(state, skill, obs, key, jnp.bool_(True), 3.0)
    u = np.arctanh(np.asarray(a, np.float64)) / 0.1
    assert np.all(np.abs(u) <= 3.0 + 1e-3)
    # u = clip(3 N(0, 1), -3, 3): P(|u| = 3) = P(|N| > 1) = 0.317
    assert abs(np.mean(np.abs(u) > 3.0 - 1e-3) - 0.317) < 0.03
    assert abs(np.mean(u)) < 0.1
    a_pi = hl.execute(skill, obs, state.td3.actor_net.apply(state.td3.actor, obs))
    quiet = state.replace(expl_noise=jnp.float32(0.0))
    a0 = online.behaviour_action(quiet, skill, obs, key, jnp.bool_(False), 3.0)
    np.testing.assert_allclose(a0, a_pi, atol=1e-6)
    noisy = online.behaviour_action(state, skill, obs, key, jnp.bool_(False), 3.0)
    assert abs(float(jnp.std(noisy - a_pi)) - 0.1) < 0.01  # |a_pi| < tanh(0.3): no clipping


def test_oracle_reward_subtracts_weighted_cost():
    _, task, _ = first_chunk(cost_weight=0.0)
    _, oracle, _ = first_chunk(cost_weight=10.0)
    task, oracle = task.algo.replay, oracle.algo.replay
    # warm-up actions do not depend on the reward: the first 300 transitions coincide
    np.testing.assert_array_equal(oracle.obs[:300], task.obs[:300])
    np.testing.assert_array_equal(oracle.cost[:300], task.cost[:300])
    assert float(jnp.sum(task.cost[:300])) > 0  # random actions leave the corridor
    expected = task.reward[:300] - 10.0 * task.cost[:300]
    np.testing.assert_allclose(oracle.reward[:300], expected, rtol=1e-6, atol=1e-6)


def test_bad_arguments_raise(tmp_path):
    key, cfg = jax.random.PRNGKey(0), tiny_config()
    with pytest.raises(ValueError, match="unknown reward 'cost'"):
        online.train_online(key, "ball-run", IDENTITY, cfg, tmp_path, reward="cost")
    with pytest.raises(ValueError, match="'task-only' cannot train on the 'oracle'"):
        online.train_online(key, "ball-run", IDENTITY, cfg, tmp_path, reward="oracle")
    with pytest.raises(ValueError, match="'safe-cpl' acts through a 'cpl' skill"):
        online.train_online(key, "ball-run", IDENTITY, tiny_config("safe-cpl"), tmp_path)
    with pytest.raises(ValueError, match="chunk=500 must be a multiple of n_envs=3"):
        online.train_online(key, "ball-run", IDENTITY, tiny_config(n_envs=3), tmp_path)
    with pytest.raises(ValueError, match="does not match"):
        online.train_online(key, "ball-circle", IDENTITY, cfg, tmp_path)
    with pytest.raises(ValueError, match="unknown online method 'rc'"):
        methods.online_config("small", "ball-run", "rc")


def test_online_config():
    assert methods.online_config("paper", "ant-vel", "task-only").beta_reg == 0.0
    paper = methods.online_config("paper", "ant-vel", "safe-vpl")
    assert (paper.beta_reg, paper.q_scale, paper.bc_weight, paper.steps) == (0.01, 200, 0, 2e6)
    assert (paper.expl_noise, paper.warmup_steps, paper.warmup_u_std) == (0.1, 10_000, 3.0)
    small = methods.online_config("small", "ball-run", "task-only")
    assert (small.steps, small.method) == (20_000, "task-only")


def params_of(td3):
    return {"actor": td3.actor, "critic": td3.critic, "target": td3.target_critic}


def assert_trees_close(a, b, tol):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=tol, atol=tol)


def train_log(workdir, name):
    """Per-chunk values of a logged training metric ([chunk] or [chunk, seed])."""
    lines = (workdir / "train.jsonl").read_text().splitlines()
    return np.asarray([json.loads(line)[name] for line in lines])


SEPARATE_KEY = jax.random.PRNGKey(3)


@pytest.fixture(scope="module")
def separate_runs(tmp_path_factory):
    """Uninterrupted single-seed runs of seeds 0-3: {seed: (TD3State, workdir)}."""
    out = {}
    for i in range(4):
        workdir = tmp_path_factory.mktemp(f"seed{i}")
        td3 = online.train_online(SEPARATE_KEY, ENV, IDENTITY, tiny_config(), workdir, seeds=i)
        out[i] = (td3, workdir)
    return out


def test_vmapped_seeds_equal_separate_runs(tmp_path, separate_runs):
    both = online.train_online(
        SEPARATE_KEY, ENV, IDENTITY, tiny_config(), tmp_path, seeds=(0, 1, 2, 3)
    )
    for i, (one, workdir) in separate_runs.items():
        # trajectories agree to float precision (~1e-6); the parameters drift further apart
        # because early on Q ~ 0, so Adam turns rounding-level gradients into full steps
        for name in ("episode_return", "reward", "cost"):
            logged = train_log(tmp_path, name)[:, i]
            np.testing.assert_allclose(logged, train_log(workdir, name), rtol=1e-4)
        member = jax.tree.map(lambda x, i=i: x[i], params_of(both))
        assert_trees_close(member, params_of(one), 1e-2)
    kernel = jax.tree.leaves(both.actor)[-1]
    assert not np.allclose(kernel[0], kernel[1])  # the two seeds really differ


def test_resume_matches_uninterrupted(tmp_path, separate_runs):
    cfg = tiny_config()

    def stop_after_first_chunk(step, total, scalars):
        if step == 500:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        online.train_online(
            SEPARATE_KEY, ENV, IDENTITY, cfg, tmp_path, progress=stop_after_first_chunk
        )
    assert len(train_log(tmp_path, "reward")) == 1
    steps = []
    resumed = online.train_online(
        SEPARATE_KEY, ENV, IDENTITY, cfg, tmp_path, progress=lambda step, *_: steps.append(step)
    )
    assert steps == [1000]  # restarted from the checkpoint (buffer, envs, learner), not anew
    full = separate_runs[0][0]
    assert int(resumed.step) == int(full.step) == 1000 - 300  # updates after warm-up
    leaves = zip(jax.tree.leaves(params_of(resumed)), jax.tree.leaves(params_of(full)), strict=True)
    for x, y in leaves:
        np.testing.assert_array_equal(x, y)


def random_policy_return(n_episodes=200):
    """Mean Ball-Run downstream return of uniform random actions (~79 over 200 episodes)."""
    env = make(ENV)
    params = env.default_params()

    def episode(key):
        k_reset, k_steps = jax.random.split(key)
        _, state = env.reset(k_reset, params)

        def body(carry, key):
            state, ret = carry
            k_a, k_env = jax.random.split(key)
            a = jax.random.uniform(k_a, (env.action_size,), minval=-1.0, maxval=1.0)
            ts, state = env.step(k_env, state, a, params)
            return (state, ret + ts.reward), None

        (_, ret), _ = jax.lax.scan(body, (state, 0.0), jax.random.split(k_steps, EPISODE))
        return ret

    keys = jax.random.split(jax.random.PRNGKey(5), n_episodes)
    return float(jnp.mean(jax.jit(jax.vmap(episode))(keys)))


def test_identity_td3_learns_ball_run(tmp_path):
    """10k env steps (1k random) of Task-Only TD3 on Ball-Run: the deterministic policy's mean
    return over 50 random-goal episodes is 196 against ~79 for uniform random actions (seeds
    0-3 of a vmapped run: 178-209; training is chaotic, so the margin asked is ~3x smaller)."""
    cfg = tiny_config(
        hidden=(32, 32), batch_size=64, lr=1e-3, n_envs=1, chunk=1000, steps=10_000,
        warmup_steps=1000, buffer_size=10_000,
    )  # fmt: skip
    evaluate = online_evaluator(jax.random.PRNGKey(1), "ball-run", IDENTITY, 50)
    online.train_online(jax.random.PRNGKey(0), ENV, IDENTITY, cfg, tmp_path, evaluate=evaluate)
    final = float(json.loads((tmp_path / "eval.jsonl").read_text())["return"])
    baseline = random_policy_return()
    assert 60 < baseline < 100
    assert final > baseline + 60, (final, baseline)


def online_evaluator(key, task: str, skill, n_episodes: int):
    """``evaluate(loop) -> {"return", "cost"}`` of one seed's state for `train_online`; the
    key is folded with the step, so evaluations differ over training."""
    one = jax.jit(downstream_returns_fn(task, n_episodes, lambda p, obs: act(p[0], p[1], obs)))

    def evaluate(loop) -> dict:
        ret, cost = one(jax.random.fold_in(key, jnp.max(loop.step)), (loop.algo.td3, skill))
        return {"return": ret.mean(-1), "cost": cost.mean(-1)}

    return evaluate
