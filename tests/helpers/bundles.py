"""A tiny published reward bundle as the paper's code writes it (its run config and best_model.pt), folder and zip."""

import os
import zipfile

import torch
from pytorch3dunet.unet3d.model import ResidualUNetSE3D

#----------------------------------------------------------------------------
# A bundle as the paper's code writes it, built here without our model: pytorch3dunet's U-Net plus the two 1x1
# reconstruction convolutions under Conv3DModule., and MLPs with the paper's key names (input_layer,
# hidden_layers.<i>.0, output_layer). Small sizes, which the YAML states; the loader must honour them.

F_MAPS, FEATURE, MLP_HIDDEN, MLP_OUT, HEAD_HIDDEN = [4, 8], 8192, [16, 16], 8, [6, 4]

YAML = f"""\
task_name: train_rwd
trainer:
  default_root_dir: ${{oc.env:HOME}}/runs       # An interpolation nobody resolves: it stays a string.
model:
  _target_: core_modules.models.conv3d.Conv3DNetworkEnsemble
  return_global_embedding: true
  external: null
  compile: false
  optimizer:
    _target_: torch.optim.AdamW
    _partial_: true
    lr: 0.0001
  Conv3DModule:
    _target_: core_modules.models.unet3d.model.ResidualUNetSE3D
    in_channels: 1
    out_channels: 8
    f_maps: {F_MAPS}
    layer_order: gcr
    num_groups: 2
    final_sigmoid: false
    is_segmentation: false
    forward_type: entire
    final_size_out: {FEATURE}
    n_channels_for_recon: 4
    n_channels_for_feature: 4
    recon_pool_type: avg
    feature_pool_type: max
  mlp_global:
    _target_: core_modules.models.utils_base.MLP
    input_size: {FEATURE}
    output_size: {MLP_OUT}
    hidden_sizes: {MLP_HIDDEN}
    dropout_rate: 0.1
    normalisation_type: none
    activation_type: softplus
    use_dropout: true
  mlp_scalar_rwd:
    _target_: core_modules.models.utils_base.MLP
    input_size: ${{model.mlp_global.output_size}}
    output_size: 1
    hidden_sizes: {HEAD_HIDDEN}
    normalisation_type: none
    activation_type: softplus
  mlp_BT:
    _target_: core_modules.models.utils_base.MLP
    input_size: ${{model.mlp_global.output_size}}
    output_size: 1
    hidden_sizes: {HEAD_HIDDEN}
    normalisation_type: none
  mlp_pairs:
    _target_: core_modules.models.utils_base.MLP
    input_size: ${{multiply:${{model.mlp_global.output_size}},2}}
    output_size: 2
    hidden_sizes: {HEAD_HIDDEN}
    normalisation_type: none
"""


def mlp_weights(prefix, sizes, out, gen):
    """The paper's MLP state_dict entries: input_layer, hidden_layers.<i>.0 (Linear, then its activation), output_layer."""
    dims = [('input_layer', sizes[0], sizes[1]), *((f'hidden_layers.{i}.0', a, b) for i, (a, b) in
        enumerate(zip(sizes[1:-1], sizes[2:]))), ('output_layer', sizes[-1], out)]
    sd = {}
    for name, a, b in dims:
        sd[f'{prefix}.{name}.weight'] = torch.randn([b, a], generator=gen) / a ** 0.5
        sd[f'{prefix}.{name}.bias'] = torch.randn([b], generator=gen) * 0.1
    return sd


def paper_state_dict(seed=0):
    gen = torch.Generator().manual_seed(seed)
    unet = ResidualUNetSE3D(1, 8, f_maps=F_MAPS, layer_order='gcr', num_groups=2, is_segmentation=False)
    sd = {f'Conv3DModule.{k}': torch.randn(v.shape, generator=gen) * 0.3 for k, v in unet.state_dict().items()}
    for name, shape in [('conv1d_for_recon.weight', [1, 1, 1]), ('conv1d_for_recon.bias', [1]),
            ('conv3d_for_recon.weight', [1, 1, 1, 1, 1]), ('conv3d_for_recon.bias', [1])]:
        sd[f'Conv3DModule.{name}'] = torch.randn(shape, generator=gen)
    sd.update(mlp_weights('MLP', [FEATURE, *MLP_HIDDEN], MLP_OUT, gen))
    for head in ('scalar_rwd_head', 'scalar_rwd_head_BT'):
        sd.update(mlp_weights(head, [MLP_OUT, *HEAD_HIDDEN], 1, gen))
    sd.update(mlp_weights('scalar_rwd_head_pairs', [2 * MLP_OUT, *HEAD_HIDDEN], 2, gen))
    return sd


def write_bundle(root, sd=None, config_name='release_config.yaml', yaml_text=YAML, weights=None):
    """A bundle folder root/7wnzkgie/ and its zip root/reward.zip; returns (folder, zip)."""
    folder = os.path.join(root, '7wnzkgie')
    os.makedirs(folder, exist_ok=True)
    torch.save(paper_state_dict() if sd is None else sd, os.path.join(folder, 'best_model.pt')) if weights is None else \
        torch.save(weights, os.path.join(folder, 'best_model.pt'))
    with open(os.path.join(folder, config_name), 'w') as f:
        f.write(yaml_text)
    path = os.path.join(root, 'reward.zip')
    with zipfile.ZipFile(path, 'w') as z:
        for name in sorted(os.listdir(folder)):
            z.write(os.path.join(folder, name), f'7wnzkgie/{name}')
    return folder, path

#----------------------------------------------------------------------------
