"""Reinforcement learning seeds: DACER (diffusion actor-critic with entropy regulator, arXiv 2405.15177),
a PyTorch implementation written from the paper, run on gymnasium v5 MuJoCo environments."""
