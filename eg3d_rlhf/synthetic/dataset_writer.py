"""Write synthetic heads as an EG3D dataset zip (PNGs + dataset.json labels) with each sample's parameters."""

import concurrent.futures
import io
import json
import multiprocessing
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


def write_dataset(path, count, resolution, seed, defect_rate=0.0, supersample=2, batch_size=16, progress=True, workers=1):
    """Render `count` samples of dataset `seed` into the zip `path`; replaces `path` only once complete.

    Each image is rendered at supersample x resolution and box-filtered down (anti-aliasing); the pixel
    centres, and so the labels, are the same at both sizes. workers > 1 renders the batches in that many child
    processes; the file is the same byte for byte.

    Returns a summary dict (count, defective samples, defect kinds counted).
    """
    # The renderer runs many small elementwise ops; one thread was several times faster than two when measured on
    # a shared 2-core machine, where OpenMP workers wait on each other. The caller's setting comes back afterwards.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _write_dataset(path, count, resolution, seed, defect_rate, supersample, batch_size, progress, workers)
    finally:
        torch.set_num_threads(threads)


def _render_batch(seed, indices, resolution, supersample, defect_rate):
    """[(fname, PNG bytes, label [25], parameter line, defect kinds)] of the samples `indices` of dataset `seed`."""
    samples = [world.sample(seed, i, defect_rate) for i in indices]
    images = render.render(samples, resolution * supersample).image
    images = torch.nn.functional.avg_pool2d(images, supersample)
    return [(image_fname(sample.index), _png(image), [float(x) for x in sample.label().tolist()],
        json.dumps(dict(fname=image_fname(sample.index), **sample.to_dict()), sort_keys=True), list(sample.defects))
        for sample, image in zip(samples, images)]


def _write_dataset(path, count, resolution, seed, defect_rate, supersample, batch_size, progress, workers):
    labels, lines = [], []
    kinds, defective = {}, 0
    batches = [range(start, min(count, start + batch_size)) for start in range(0, count, batch_size)]
    fd, tmp = tempfile.mkstemp(suffix='.zip.tmp', dir=os.path.dirname(os.path.abspath(path)))
    os.close(fd)
    pool = None
    try:
        if workers > 1:
            pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context('spawn'),
                initializer=torch.set_num_threads, initargs=(1,))
            rendered = pool.map(_render_batch, *zip(*[(seed, b, resolution, supersample, defect_rate) for b in batches]))
        else:
            rendered = (_render_batch(seed, b, resolution, supersample, defect_rate) for b in batches)
        with zipfile.ZipFile(tmp, 'w') as zf, tqdm(total=count, unit='img', disable=not progress) as bar:
            for batch in rendered:
                for fname, png, label, line, sample_kinds in batch:
                    _put(zf, fname, png)
                    labels.append([fname, label])
                    lines.append(line)
                    defective += bool(sample_kinds)
                    for kind in sample_kinds:
                        kinds[kind] = kinds.get(kind, 0) + 1
                bar.update(len(batch))
            meta = dict(seed=seed, count=count, resolution=resolution, defect_rate=defect_rate, supersample=supersample, params=PARAMS_NAME)
            _put(zf, 'dataset.json', json.dumps({'labels': labels, 'synthetic_heads': meta}))
            _put(zf, PARAMS_NAME, '\n'.join(lines) + '\n')
        os.replace(tmp, path)
    except BaseException:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        os.remove(tmp)
        raise
    finally:
        if pool is not None:
            pool.shutdown()
    return dict(count=count, defective=defective, kinds=dict(sorted(kinds.items())))


def read_samples(path):
    """{fname: SyntheticHead} from a zip written by write_dataset."""
    with zipfile.ZipFile(path) as zf:
        lines = zf.read(PARAMS_NAME).decode('utf8').splitlines()
    return {d['fname']: world.SyntheticHead.from_dict(d) for d in map(json.loads, lines)}

#----------------------------------------------------------------------------
