"""PyTorch references of the benchmark (benchmarks/torch_ref) against our JAX updates.

Each reference starts from the JAX parameters and is fed the JAX update's noise; the losses
it reports over three consecutive updates must equal the JAX update's metrics, which checks
the loss math, the optimiser and the order of the steps and target updates. torch comes
with the ``test`` extra (CPU build), so these run wherever the test command runs.
"""

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from torch_ref import agents, data, nets, skills  # noqa: E402

from scpr_jax import methods  # noqa: E402
from scpr_jax import skill as highlevel  # noqa: E402
from scpr_jax.agents import iql, sac, td3  # noqa: E402
from scpr_jax.data.collect import collect_config  # noqa: E402
from scpr_jax.nets import MLP  # noqa: E402
from scpr_jax.skills import batches, cpl, vae  # noqa: E402
from scpr_jax.skills.vpl import vpl_skill  # noqa: E402

B, OBS, ACT, Z, P, L = 5, 4, 2, 2, 3, 4  # batch, obs, action, latent, pairs, steps
HIDDEN = (8, 8)
STEPS = 3


# compiling dominates these tests (tiny programs, few steps): skip most XLA passes
pytestmark = pytest.mark.usefixtures("fast_compile")


def rng_arrays(seed: int, **shapes) -> dict:
    """float32 N(0, 1) arrays; names ending in "action"/"act" in [-1, 1], "y"/"terminated" 0/1."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in shapes.items():
        x = rng.standard_normal(shape)
        if name.startswith(("act", "action")):
            x = np.tanh(x)
        if name in ("y", "terminated"):
            x = x > 0
        out[name] = x.astype(np.float32)
    return out


def transitions(obs_size: int = OBS) -> dict:
    return rng_arrays(
        0, obs=(B, obs_size), action=(B, ACT), reward=(B,), next_obs=(B, obs_size), terminated=(B,)
    )


def as_torch(batch: dict) -> dict:
    return {k: torch.from_numpy(np.asarray(v)) for k, v in batch.items()}


def assert_metrics(jax_metrics: dict, torch_metrics: dict, names) -> None:
    for name in names:
        got = float(torch_metrics[name])
        np.testing.assert_allclose(
            got, float(jax_metrics[name]), rtol=2e-4, atol=1e-5, err_msg=name
        )


def test_take_sets_matches_jax_set_example():
    n_sets, n_users = 4, 2
    arrays = rng_arrays(1, obs=(40, OBS), action=(40, ACT), y=(n_users, n_sets, P))
    rng = np.random.default_rng(2)
    starts = rng.integers(0, 40 - L, (2, n_sets, P))
    users, sets = np.repeat(np.arange(n_users), n_sets), np.tile(np.arange(n_sets), n_users)
    jax_data = batches.SetData(
        obs=jnp.asarray(arrays["obs"]), action=jnp.asarray(arrays["action"]),
        starts1=jnp.asarray(starts[0], jnp.int32), starts2=jnp.asarray(starts[1], jnp.int32),
        y=jnp.asarray(arrays["y"]), users=jnp.asarray(users, jnp.int32),
        sets=jnp.asarray(sets, jnp.int32), segment_len=L,
    )  # fmt: skip
    torch_data = data.SetData(
        obs=torch.from_numpy(arrays["obs"]), action=torch.from_numpy(arrays["action"]),
        starts1=torch.from_numpy(starts[0]), starts2=torch.from_numpy(starts[1]),
        y=torch.from_numpy(arrays["y"]), users=torch.from_numpy(users),
        sets=torch.from_numpy(sets), segment_len=L,
    )  # fmt: skip
    idx = np.array([7, 0, 3, 7])
    want = jax.vmap(batches.set_example, (None, 0))(jax_data, jnp.asarray(idx))
    got = data.take_sets(torch_data, torch.from_numpy(idx))
    for name in ("feats", "obs1", "obs2", "act1", "act2", "y"):
        np.testing.assert_array_equal(got[name].numpy(), np.asarray(want[name]), err_msg=name)


def test_vae_elbo_and_updates_match_jax():
    config = vae.VAEConfig(latent_dim=Z, hidden=8, decoder_hidden=HIDDEN, total_steps=8, n_cycles=2)
    sets = rng_arrays(3, obs1=(B, P, L, OBS), obs2=(B, P, L, OBS), act1=(B, P, L, ACT),
                      act2=(B, P, L, ACT), y=(B, P))  # fmt: skip
    label = np.broadcast_to(sets["y"][..., None, None], (B, P, L, 1))
    sets["feats"] = np.concatenate([sets["obs1"], sets["obs2"], label], -1)
    example = jax.tree.map(lambda x: jnp.asarray(x[0]), sets)
    state = jax.jit(vae.vae_init, static_argnums=2)(jax.random.key(0), example, config)
    model = skills.VAE(OBS, ACT, Z, 8, HIDDEN, True, config.lr, config.kl_weight, 8, 2,
                       torch.Generator())  # fmt: skip
    enc = state.params.encoder["params"]
    nets.load_linear(model.encoder.embed, enc["Dense_0"])
    for name in ("time_attention", "pair_attention"):
        nets.load_attention(getattr(model.encoder, name), enc[name])
    nets.load_linear(model.encoder.mean, enc["mean"])
    nets.load_linear(model.encoder.logvar, enc["logvar"])
    nets.load_mlp(model.decoder, state.params.decoder["params"]["MLP_0"])
    batch = jax.tree.map(jnp.asarray, sets)
    update = jax.jit(vae.vae_update, static_argnums=3)
    betas = []
    for step in range(STEPS):
        key = jax.random.key(10 + step)
        eps = jax.vmap(lambda k: jax.random.normal(k, (Z,)))(jax.random.split(key, B))
        state, want = update(state, batch, key, config)
        got = model.update(as_torch(sets), torch.from_numpy(np.asarray(eps)))
        assert_metrics(want, got, ("loss", "nll", "kl"))
        betas.append(float(want["beta"]))
    assert betas == [0.0, 0.5, 1.0]  # the annealed KL weight was exercised


def test_cpl_updates_match_jax():
    cfg = cpl.cpl_config("small", "ball-run").unlock()
    cfg.hidden = HIDDEN
    state = cpl.cpl_init(jax.random.key(0), OBS, Z, ACT, cfg)
    model = skills.CPL(OBS, Z, ACT, HIDDEN, cfg.alpha, cfg.lam, cfg.lr, torch.Generator())
    nets.load_mlp(model.net, state.params.net["params"]["MLP_0"])
    sets = rng_arrays(4, obs1=(B, P, L, OBS), obs2=(B, P, L, OBS), act1=(B, P, L, ACT),
                      act2=(B, P, L, ACT), y=(B, P), z_mean=(B, Z), z_logvar=(B, Z))  # fmt: skip
    update = jax.jit(lambda s, b, k: cpl.cpl_update(s, b, k, None, None))
    for step in range(STEPS):
        key = jax.random.key(20 + step)
        eps = jax.random.normal(key, (B, Z))  # cpl.sample_latents' draw
        state, want = update(state, jax.tree.map(jnp.asarray, sets), key)
        got = model.update(as_torch(sets), torch.from_numpy(np.asarray(eps)))
        assert_metrics(want, got, ("loss",))


def test_iql_expectile_loss_and_updates_match_jax():
    cfg = iql.iql_config("small").unlock()
    cfg.hidden, cfg.steps, cfg.chunk = HIDDEN, 4, 4  # a short cosine schedule: it matters
    state = iql.iql_init(jax.random.key(0), OBS, ACT, cfg)
    model = agents.IQL(OBS, ACT, HIDDEN, cfg.lr, cfg.steps, cfg.gamma, cfg.expectile,
                       cfg.temperature, cfg.max_weight, cfg.tau)  # fmt: skip
    for twin in (model.q, model.q_target):
        nets.load_twin_q(twin, state.q)
    nets.load_mlp(model.v, state.v["params"])
    nets.load_mlp(model.policy_mean, state.policy.mean["params"])
    batch = transitions()
    with torch.no_grad():
        q_min = model.q_target(as_torch(batch)["obs"], as_torch(batch)["action"]).min(0).values
        got = model.value_loss(as_torch(batch), q_min)
    want, _ = iql.value_loss(state.v, state, jax.tree.map(jnp.asarray, batch))
    np.testing.assert_allclose(float(got), float(want), rtol=1e-5)
    update = jax.jit(iql.iql_update)
    for _ in range(STEPS):
        state, want = update(state, jax.tree.map(jnp.asarray, batch), jax.random.key(0))
        assert_metrics(want, model.update(as_torch(batch)), ("v_loss", "policy_loss", "q_loss"))


def _skill(prior_mean, prior_logvar):
    mean = MLP((8,), ACT).init(jax.random.key(5), jnp.zeros((1, OBS + Z)))
    policy = iql.PolicyParams(mean=mean, log_std=jnp.zeros(ACT), hidden=(8,))
    prior = vae.VAEParams(None, None, jnp.asarray(prior_mean), jnp.asarray(prior_logvar))
    skill = vpl_skill(policy, prior, OBS)
    ref = agents.VPLSkill(OBS, Z, ACT, (8,), torch.tensor(prior_mean),
                          torch.tensor(np.exp(0.5 * np.asarray(prior_logvar))))  # fmt: skip
    nets.load_mlp(ref.mean, mean["params"])
    return skill, ref


def test_td3_through_skill_matches_jax():
    policy_freq = 2  # odd steps update the critic only, even ones the actor and targets too
    skill, ref = _skill([0.3, -0.2], [-0.5, 0.4])
    cfg = methods.td3bc_config("small", "ball-run", "safe-vpl").unlock()
    cfg.hidden, cfg.policy_freq = HIDDEN, policy_freq
    obs_full = OBS + 1  # the goal is the observation's tail: the skill must drop it
    state = td3.td3_init(jax.random.key(0), obs_full, Z, ACT, cfg, highlevel.u_bound(skill))
    names = ("lr", "gamma", "tau", "beta_reg", "bc_weight", "target_noise", "noise_clip")
    hparams = {k: cfg[k] for k in names} | {"q_scale": cfg.bc_alpha, "policy_freq": policy_freq}
    sizes = (obs_full, Z, ACT, HIDDEN, ref, highlevel.u_bound(skill))
    model = agents.TD3(*sizes, gen=torch.Generator(), **hparams)
    for actor in (model.actor, model.target_actor):
        nets.load_mlp(actor.net, state.actor["params"]["MLP_0"])
    for critic in (model.critic, model.target_critic):
        nets.load_twin_q(critic, state.critic)
    batch = transitions(obs_full)
    update = jax.jit(td3.td3_update)
    for step in range(2 * STEPS):
        key = jax.random.key(30 + step)
        eps = jax.random.normal(key, (B, ACT))  # td3.smoothed_next_action's draw
        state, want = update(state, jax.tree.map(jnp.asarray, batch), key, skill)
        got = model.update(as_torch(batch), torch.from_numpy(np.asarray(eps)))
        names = ("critic_loss", "actor_loss") if step % policy_freq == 0 else ("critic_loss",)
        assert_metrics(want, got, names)


def test_sac_updates_match_jax():
    cfg = collect_config("small").unlock()
    cfg.hidden = HIDDEN
    state = sac.sac_init(jax.random.key(0), OBS, ACT, cfg)
    model = agents.SAC(OBS, ACT, HIDDEN, cfg.lr, cfg.gamma, cfg.tau, cfg.init_alpha,
                       torch.Generator())  # fmt: skip
    nets.load_mlp(model.actor, state.actor_params["params"]["MLP_0"])
    for critic in (model.critic, model.target_critic):
        nets.load_twin_q(critic, state.critic_params)
    batch = transitions()
    update = jax.jit(sac.sac_update)
    for step in range(STEPS):
        key = jax.random.key(40 + step)
        k_critic, k_actor = jax.random.split(key)  # sac.sac_update's split
        eps_next, eps = (jax.random.normal(k, (B, ACT)) for k in (k_critic, k_actor))
        state, want = update(state, sac.Transition(**jax.tree.map(jnp.asarray, batch)), key)
        got = model.update(
            as_torch(batch), *(torch.from_numpy(np.asarray(e)) for e in (eps_next, eps))
        )
        assert_metrics(want, got, ("critic_loss", "actor_loss", "alpha_loss"))


def test_matmul_shapes_products_and_report(tmp_path):
    import json

    import matmul_shapes

    x, w, g = np.arange(6.0).reshape(3, 2), np.arange(4.0).reshape(2, 2), np.ones((3, 2))
    expected = {"forward x W": x @ w, "input grad g W^T": g @ w.T, "weight grad x^T g": x.T @ g}
    for product, want in expected.items():
        (a, b), f = matmul_shapes._operands(product, x, w, g)
        np.testing.assert_allclose(f(a, b), want)
    matmul_shapes.main(["--rows", "8", "--reps", "2", "--repeats", "1", "--out", str(tmp_path)])
    report = json.loads((tmp_path / "matmul_shapes.json").read_text())
    assert len(report["results"]) == len(matmul_shapes.SHAPES) * len(matmul_shapes.PRODUCTS)
    assert all(r["jax_gflops"] > 0 and r["torch_gflops"] > 0 for r in report["results"])
    assert "| 128x128 | weight grad x^T g |" in (tmp_path / "matmul_shapes.md").read_text()
    with pytest.raises(SystemExit):
        matmul_shapes.parse_args(["--rows", "0"])


def test_report_rates_keep_three_significant_digits():
    from vs_pytorch_report import rate

    got = [rate(x) for x in (0.0753, 0.35, 2.205, 25.04, 155.33, 1202.2)]
    assert got == ["0.0753", "0.350", "2.21", "25.0", "155.3", "1,202.2"]
