"""Procedural 3D heads with known geometry: parameters, true SDF and density, defects, renders, EG3D datasets."""

# Modules, from the bottom up:
#   sdf_ops         distance primitives (sphere, ellipsoid, round cone) and smooth CSG on V(x, y, z) point batches
#   layout          flat float layouts of parameter dataclasses (pack a batch, read per-point columns back)
#   heads           HeadParams, sample_head(rng), the head's signed distance and albedo, nose_tip landmark
#   defects         defect kinds (asymmetry, noise, dent, hole, spike, floater, sharp_nose): parameters and effect
#   cameras         FFHQ-like poses and EG3D 25-float labels
#   world           SyntheticHead = head + defects + pose from (seed, index); batched true sdf() and density()
#   render          sphere tracing through EG3D's RaySampler: RGB, depth, mask
#   dataset_writer  EG3D-format zip (PNGs, dataset.json labels) plus params.jsonl; read_samples() rebuilds them
#   shape_prior     geometry warm start: regress a new generator's raw sigma onto prior heads (train.py --shape-prior-steps)
