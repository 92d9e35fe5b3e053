"""The RL agent (DDPG on stable-baselines3, AMC-style) and its search loop."""
