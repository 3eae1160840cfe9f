"""Reinforcement-learning agents as pure ``init`` / ``update`` functions over pytree state."""
