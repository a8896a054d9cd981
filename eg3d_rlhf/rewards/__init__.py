"""Reward models over generator geometry; each has score(x) -> [N] and features(x) -> [N, F]."""

# Modules:
#   sigma_cnn   3D CNN on the self-normalised sigma slab (residual squeeze-and-excitation blocks, 8192-d feature)
#   losses      Bradley-Terry (with or without ties) on reward pairs
