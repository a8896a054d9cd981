"""Packaging for eg3d-rlhf: EG3D-compatible networks plus geometry-preference fine-tuning."""

from setuptools import find_packages, setup

setup(
    name='eg3d-rlhf',
    version='0.1.0',
    description='Fine-tune 3D-aware generators (EG3D) from human preferences about their geometry',
    python_requires='>=3.9',
    packages=find_packages(include=['dnnlib*', 'torch_utils*', 'training*', 'eg3d_rlhf*', 'tools']),
    py_modules=['train'],                               # With tools/: the `eg3d-rlhf` command's tools (tools/__main__.py).
    entry_points={'console_scripts': ['eg3d-rlhf = tools.__main__:main']},
    package_data={'torch_utils.ops': ['*.cpp', '*.cu', '*.h'], 'eg3d_rlhf.data': ['label_page.html', 'mesh_viewer.js', 'rate_page.html']},
    install_requires=[
        'torch>=2.1,<3',        # 2.13.0 CPU wheel on the dev machine; install it first so no CUDA build is pulled in.
        'ninja',
        'click>=8',
        'numpy',
        'scipy',
        'PyMCubes',
        'umap-learn',
        'captum',
        'pillow',
        'tqdm',
        'psutil',
        'matplotlib',           # PNG plots in run reports (Agg backend, no display needed).
        'statsmodels',          # Replication over training seeds: cluster-robust fits and Holm (analysis/replication.py).
        'scikit-image',         # PSNR and SSIM in tools/evaluate.py.
        'mrcfile',              # .mrc sigma cubes: read by tools/tails.py, written by tools/extract_sigma.py --mrc.
        'pyyaml',               # The published bundle's release_config.yaml and train.py --config run files (safe_load).
        'safetensors',          # Reward and flow checkpoints as .safetensors: no unpickling (torch_utils/safetensors_file.py).
        'pytorch3dunet',        # ResidualUNetSE3D of the published sigma reward (1.9.6). It declares torchvision (never
                                # imports it), unpinned: install torch==2.13.0 torchvision==0.28.0 first, or pip fetches
                                # a CUDA torch; PyPI's torchvision cannot load beside a CPU torch (README.md removes it).
    ],
    extras_require={'test': ['pytest', 'pytest-xdist',  # xdist runs README's `-n 2` (two worker processes);
            'selenium'],                               # selenium drives Chromium in tests/test_label.py.
        'lora': ['peft'],                              # train.py --generator=flow --lora-rank R (finetune/lora.py).
        'gpu': ['triton==3.9.0']},                     # Triton kernels of the custom ops for CUDA tensors (large; CI
                                                       # installs it to run them in Triton's CPU interpreter).
)
