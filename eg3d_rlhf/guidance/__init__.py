"""Reward guidance without fine-tuning: reward-guided flow sampling and reward-guided EG3D inversion."""
