"""Offline trajectories (D_tau) and crowd preference sets (D_pref)."""
