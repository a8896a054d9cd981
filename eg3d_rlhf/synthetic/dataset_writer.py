"""Write synthetic heads as an EG3D dataset zip (PNGs + dataset.json labels) with each sample's parameters."""

import io
import json
import os
import tempfile
import zipfile

import PIL.Image
import torch
from tqdm import tqdm

from eg3d_rlhf.synthetic import render, world

#----------------------------------------------------------------------------
# Layout of the zip, as EG3D's dataset_tool writes it: 00000/img00000000.png ..., and dataset.json holding
# {"labels": [[fname, [25 floats]], ...]} (EG3D's loader reads only "labels"; the "synthetic_heads" key
# records how the set was made). params.jsonl holds one SyntheticHead.to_dict() per line, with its fname,
# so that code can rebuild each sample's true SDF. Entries are stored uncompressed with a fixed date, so the
# same arguments give a byte-identical file.

ZIP_DATE = (1980, 1, 1, 0, 0, 0)
PARAMS_NAME = 'params.jsonl'


def image_fname(index):
    digits = f'{index:08d}'
    return f'{digits[:5]}/img{digits}.png'


def _png(image):
    """PNG bytes of an image [3, H, W] in [0, 1]."""
    pixels = (image.permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    buf = io.BytesIO()
    PIL.Image.fromarray(pixels, 'RGB').save(buf, format='png')
    return buf.getvalue()


def _put(zf, name, data):
    info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
    info.external_attr = 0o644 << 16
    zf.writestr(info, data, compress_type=zipfile.ZIP_STORED)


def write_dataset(path, count, resolution, seed, defect_rate=0.0, supersample=2, batch_size=16, progress=True):
    """Render `count` samples of dataset `seed` into the zip `path`; replaces `path` only once complete.

    Each image is rendered at supersample x resolution and box-filtered down (anti-aliasing); the pixel
    centres, and so the labels, are the same at both sizes.

    Returns a summary dict (count, defective samples, defect kinds counted).
    """
    # The renderer runs many small elementwise ops; one thread was several times faster than two when measured on
    # a shared 2-core machine, where OpenMP workers wait on each other. The caller's setting comes back afterwards.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _write_dataset(path, count, resolution, seed, defect_rate, supersample, batch_size, progress)
    finally:
        torch.set_num_threads(threads)


def _write_dataset(path, count, resolution, seed, defect_rate, supersample, batch_size, progress):
    labels, lines = [], []
    kinds, defective = {}, 0
    fd, tmp = tempfile.mkstemp(suffix='.zip.tmp', dir=os.path.dirname(os.path.abspath(path)))
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, 'w') as zf, tqdm(total=count, unit='img', disable=not progress) as bar:
            for start in range(0, count, batch_size):
                samples = [world.sample(seed, i, defect_rate) for i in range(start, min(count, start + batch_size))]
                images = render.render(samples, resolution * supersample).image
                images = torch.nn.functional.avg_pool2d(images, supersample)
                for sample, image in zip(samples, images):
                    fname = image_fname(sample.index)
                    _put(zf, fname, _png(image))
                    labels.append([fname, [float(x) for x in sample.label().tolist()]])
                    lines.append(json.dumps(dict(fname=fname, **sample.to_dict()), sort_keys=True))
                    defective += bool(sample.defects)
                    for kind in sample.defects:
                        kinds[kind] = kinds.get(kind, 0) + 1
                bar.update(len(samples))
            meta = dict(seed=seed, count=count, resolution=resolution, defect_rate=defect_rate, supersample=supersample, params=PARAMS_NAME)
            _put(zf, 'dataset.json', json.dumps({'labels': labels, 'synthetic_heads': meta}))
            _put(zf, PARAMS_NAME, '\n'.join(lines) + '\n')
        os.replace(tmp, path)
    except BaseException:
        os.remove(tmp)
        raise
    return dict(count=count, defective=defective, kinds=dict(sorted(kinds.items())))


def read_samples(path):
    """{fname: SyntheticHead} from a zip written by write_dataset."""
    with zipfile.ZipFile(path) as zf:
        lines = zf.read(PARAMS_NAME).decode('utf8').splitlines()
    return {d['fname']: world.SyntheticHead.from_dict(d) for d in map(json.loads, lines)}

#----------------------------------------------------------------------------
