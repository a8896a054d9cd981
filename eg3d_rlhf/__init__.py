"""eg3d-rlhf: EG3D's density field as a signal for preference learning (sigma sampling, meshes, rewards)."""
