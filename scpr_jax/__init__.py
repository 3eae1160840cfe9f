"""scpr-jax: JAX-accelerated Safe Crowd Preference-based RL."""

__version__ = "0.1.0"
