"""`BridgedEnv`: N copies of a real simulator behind our `TimeStep` interface.

Host-side and stateful (the simulators are): ``reset(key, params) -> obs [N, O]`` and
``step(key, action [N, A], params) -> TimeStep`` with every field batched [N, ...] as JAX
arrays. It reproduces the functional stack ``AutoReset(EpisodeStats([AddGoal](SafeEnv)))``
copy by copy: the same forms, goal draws, mid-episode goal switch, truncation at
``params.max_steps``, ``info["final_obs"]`` and ``info["episode_*"]``, and the same key use
(copy i uses ``split(key, N)[i]`` exactly as ``vmap(env.step)`` would), so a Ball task starts
from the same state as its JAX-native twin under the same key. Rewards, costs, goal features
and goal termination come from the task's own jitted rules on the simulator's state.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from scpr_jax.bridge.sims import Sim, Step
from scpr_jax.envs.core import EnvParams, SafeEnv, TimeStep


def _stack(steps: list[Step], field: str) -> dict:
    items = [getattr(s, field) for s in steps]
    return {k: np.stack([it[k] for it in items]) for k in items[0]}


class BridgedEnv:
    """``n_envs`` copies of ``sim``'s simulator in the ``crowd`` or ``downstream`` form."""

    host = True  # steps on the host: `acting.is_host` routes rollouts and collection to loops

    def __init__(self, name: str, sim: Sim, form: str, n_envs: int):
        if n_envs < 1:
            raise ValueError(f"n_envs={n_envs} must be >= 1")
        self.name, self.sim, self.n_envs = name, sim, n_envs
        self._safe = SafeEnv(sim.task, form)  # validates the form; holds default_params
        self.envs = [sim.build() for _ in range(n_envs)]
        self.sim_obs_shape = tuple(self.envs[0].observation_space.shape)
        self.sim_action_shape = tuple(self.envs[0].action_space.shape)
        if self.sim_action_shape != (self.action_size,):
            raise ValueError(
                f"{sim.sim_id} acts with shape {self.sim_action_shape}, "
                f"but {self.task.name} expects ({self.action_size},)"
            )
        self._jit_reset_draws = jax.jit(self._reset_draws)
        self._jit_advance = jax.jit(self._advance)
        self._jit_feats = jax.jit(self._feats)
        # jit's argument transfer of a NumPy pytree is ~6x faster than jax.device_put of it
        self._to_device = jax.jit(lambda tree: tree)
        self._state: dict | None = None
        # the simulators' own reward and cost of the last step [N]: diagnostics only (Bullet's
        # refer to its own goals and limits, and its Reach goal zone depends on history)
        self.sim_signals: dict[str, np.ndarray] = {}

    task = property(lambda self: self.sim.task)
    form = property(lambda self: self._safe.form)
    action_size = property(lambda self: self.task.action_size)

    @property
    def obs_size(self) -> int:
        extra = self.task.goal_obs_size if self.form == "downstream" else 0
        return self.task.obs_size + extra

    def default_params(self, user: int = 0, max_steps: int | None = None) -> EnvParams:
        """The paper's goal set for this form (as `SafeEnv.default_params`)."""
        return self._safe.default_params(user=user, max_steps=max_steps)

    def close(self) -> None:
        for env in self.envs:
            env.close()

    # --- jitted pieces ---------------------------------------------------------------------

    def _goal(self, key: jax.Array, params: EnvParams) -> jax.Array:
        if self.form == "crowd":
            return params.goals[params.user]
        return params.goals[jax.random.randint(key, (), 0, params.goals.shape[0])]

    def _reset_draw(self, k: jax.Array, params: EnvParams) -> dict:
        """One copy's reset draws, split like `SafeEnv.reset`."""
        k_phys, k_goal = jax.random.split(k)
        return {"reset": self.sim.draw(k_phys), "reset_goal": self._goal(k_goal, params)}

    def _reset_draws(self, key: jax.Array, params: EnvParams) -> dict:
        keys = jax.random.split(key, self.n_envs)
        return jax.vmap(self._reset_draw, (0, None))(keys, params)

    def _feats(self, goal: jax.Array, phys: dict) -> jax.Array:
        """Goal features appended in the downstream form [N, goal_obs_size]."""
        return jax.vmap(self.task.goal_features)(goal, self.sim.to_phys(phys))

    def _advance(self, key, params, info, phys, goal, t, sim_terminated) -> dict:
        """The task's rules on one batched step, and the draws of the next resets [N, ...].

        Key use per copy ``k = split(key, N)[i]`` is that of `AutoReset.step` over
        `SafeEnv.step`: ``k_step, k_reset = split(k)``, ``_, k_goal, k_coin = split(k_step, 3)``.
        """
        task, state = self.task, self.sim.to_phys(phys)
        k_step, k_reset = jax.vmap(jax.random.split, out_axes=1)(jax.random.split(key, self.n_envs))
        _, k_goal, k_coin = jax.vmap(partial(jax.random.split, num=3), out_axes=1)(k_step)
        reward_fn = task.user_reward if self.form == "crowd" else task.reward
        reward = jax.vmap(reward_fn)(info, goal)
        terminated = sim_terminated
        if self.sim.task_terminates:
            terminated = terminated | jax.vmap(task.terminated)(state, goal)
        t = t + 1
        truncated = (t >= params.max_steps) & ~terminated
        # mid-episode goal switch of the downstream form (as in SafeEnv.step)
        switch = (t == params.max_steps // 2) & (
            jax.vmap(jax.random.uniform)(k_coin) < params.resample_prob
        )
        switch = switch & (self.form == "downstream")
        new_goal = jax.vmap(self._goal, (0, None))(k_goal, params)
        next_goal = jnp.where(switch[:, None], new_goal, goal)
        return {
            "reward": reward.astype(jnp.float32),
            "cost": jax.vmap(task.cost)(state).astype(jnp.float32),
            "terminated": terminated,
            "truncated": truncated,
            "next_goal": next_goal,
            "feats": self._feats(next_goal, phys),
            **jax.vmap(self._reset_draw, (0, None))(k_reset, params),
        }

    def _obs(self, base_obs: np.ndarray, feats: np.ndarray) -> np.ndarray:
        base_obs = base_obs.astype(np.float32)
        if self.form == "crowd":
            return base_obs
        return np.concatenate([base_obs, feats.astype(np.float32)], axis=-1)

    # --- the environment -----------------------------------------------------------------

    def _check(self, params: EnvParams) -> None:
        if self.form == "downstream" and params.goals.shape[-1] != self.task.goal_size:
            raise ValueError(
                f"params.goals has goal size {params.goals.shape[-1]}, "
                f"{self.task.name} needs {self.task.goal_size}"
            )

    def _reset_copies(self, idx: np.ndarray, draws: dict) -> tuple[np.ndarray, dict, np.ndarray]:
        """Resets copies ``idx``; returns their (goal-free obs, phys arrays, goals)."""
        steps = [
            self.sim.reset(self.envs[i], jax.tree.map(lambda x, i=i: x[i], draws["reset"]))
            for i in idx
        ]
        base = np.stack([s.base_obs for s in steps])
        return base, _stack(steps, "phys"), draws["reset_goal"][idx]

    def reset(self, key: jax.Array, params: EnvParams) -> jax.Array:
        """Fresh episodes in every copy; returns obs [N, obs_size]."""
        self._check(params)
        draws = jax.device_get(self._jit_reset_draws(key, params))
        base, phys, goal = self._reset_copies(np.arange(self.n_envs), draws)
        feats = jax.device_get(self._jit_feats(goal, phys))
        self._state = {
            "phys": phys,
            "goal": goal,
            "t": np.zeros(self.n_envs, np.int32),
            "ret": np.zeros(self.n_envs, np.float32),
            "cost": np.zeros(self.n_envs, np.float32),
        }
        return self._to_device(self._obs(base, feats))

    def step(self, key: jax.Array, action, params: EnvParams) -> TimeStep:
        """One step of every copy (auto-reset); every field of the result is [N, ...]."""
        if self._state is None:
            raise ValueError(f"{self.name}: call reset(key, params) before step")
        self._check(params)
        action = np.asarray(action, np.float32)
        if action.shape != (self.n_envs, self.action_size):
            raise ValueError(
                f"action has shape {action.shape}; {self.name} with n_envs={self.n_envs} "
                f"needs ({self.n_envs}, {self.action_size})"
            )
        if not np.all(np.isfinite(action)):
            raise ValueError(f"action has non-finite values: {action}")
        action = np.clip(action, -1.0, 1.0)
        s = self._state
        steps = [
            self.sim.step(env, action[i], {k: v[i] for k, v in s["phys"].items()})
            for i, env in enumerate(self.envs)
        ]
        phys, info = _stack(steps, "phys"), _stack(steps, "info")
        sim_terminated = np.array([st.terminated for st in steps])
        out = jax.device_get(
            self._jit_advance(key, params, info, phys, s["goal"], s["t"], sim_terminated)
        )
        self.sim_signals = {
            "reward": np.array([st.sim_reward for st in steps], np.float32),
            "cost": np.array([st.sim_cost for st in steps], np.float32),
        }
        obs = self._obs(np.stack([st.base_obs for st in steps]), out["feats"])
        ret, ep_cost = s["ret"] + out["reward"], s["cost"] + out["cost"]
        done = out["terminated"] | out["truncated"]
        info = {
            **info,
            "goal": s["goal"],
            "final_obs": obs,
            "episode_return": ret,
            "episode_cost": ep_cost,
            "episode_length": s["t"] + 1,
            "episode_done": done,
        }
        next_obs, next_goal = obs.copy(), out["next_goal"].copy()
        if done.any():
            idx = np.flatnonzero(done)
            base0, phys0, goal0 = self._reset_copies(idx, out)
            for k in phys:
                phys[k][idx] = phys0[k]
            next_goal[idx] = goal0
            # features of all copies (one compiled shape); only the reset rows are used
            feats = jax.device_get(self._jit_feats(next_goal, phys))
            next_obs[idx] = self._obs(base0, feats[idx])
        self._state = {
            "phys": phys,
            "goal": next_goal,
            "t": np.where(done, 0, s["t"] + 1).astype(np.int32),
            "ret": np.where(done, 0.0, ret).astype(np.float32),
            "cost": np.where(done, 0.0, ep_cost).astype(np.float32),
        }
        ts = TimeStep(
            next_obs, out["reward"], out["cost"], out["terminated"], out["truncated"], info
        )
        return self._to_device(ts)
