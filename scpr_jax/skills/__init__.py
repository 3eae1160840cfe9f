"""Skill discovery: preference VAE, Safe-VPL (BT decoder + IQL skills), Safe-CPL."""
