"""Host-side bridge to the real simulators (Bullet-Safety-Gym, Safety-Gymnasium).

``make("real:<task>/<form>", n_envs)`` returns a `BridgedEnv`: N simulator copies stepped on
the host that return our batched `TimeStep` (JAX arrays, cost as its own field). The
simulators are imported only when an environment is built.
"""

from scpr_jax.bridge.registry import PREFIX, bridged_names, is_bridged, make, split_name
from scpr_jax.bridge.vec import BridgedEnv

__all__ = ["PREFIX", "BridgedEnv", "bridged_names", "is_bridged", "make", "split_name"]
