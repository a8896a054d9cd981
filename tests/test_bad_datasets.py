"""Bad datasets are refused on opening, in one line naming the file, and left unchanged; a damaged demo cache is rendered again."""

import hashlib
import io
import json
import os
import zipfile

import numpy as np
import PIL.Image
import pytest
from click.testing import CliRunner

import train
from eg3d_rlhf.synthetic import demo, render
from tests.helpers.cli import refused_in_one_line
from tests.helpers.train import base_args
from training.dataset import DatasetError, ImageFolderDataset

#----------------------------------------------------------------------------
# Tiny datasets, written procedurally: {member: bytes} into a zip or a folder.

def png(size=8, mode='RGB', fmt='PNG', seed=0):
    """Bytes of a random image of `size` (a side or (w, h)) in `mode`, saved as `fmt`."""
    w, h = (size, size) if isinstance(size, int) else size
    pixels = np.random.RandomState(seed).randint(0, 256, size=(h, w, 3), dtype=np.uint8)
    if mode == 'I;16':
        image = PIL.Image.fromarray(pixels[:, :, 0].astype(np.uint16) * 257)
    else:
        image = PIL.Image.fromarray(pixels).convert(mode)
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def labels_json(names, label=lambda i: [0.5] * 25):
    return json.dumps({'labels': [[n, label(i)] for i, n in enumerate(names)]}).encode()


def good_files(n=3):
    """n 8x8 RGB PNGs with 25-float camera labels: a dataset that opens."""
    names = [f'00000/img{i:08d}.png' for i in range(n)]
    return dict({name: png(seed=i) for i, name in enumerate(names)}, **{'dataset.json': labels_json(names)})


def write(tmp_path, kind, files):
    """The dataset {member: bytes} as data.zip or the folder data/ in tmp_path; returns its path."""
    if kind == 'zip':
        path = tmp_path / 'data.zip'
        with zipfile.ZipFile(path, 'w') as zf:
            for name, data in files.items():
                zf.writestr(name, data)
        return path
    for name, data in files.items():
        (tmp_path / 'data' / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / 'data' / name).write_bytes(data)
    return tmp_path / 'data'


def digest(path):
    """sha256 of a file, or of every file under a folder (with its relative path)."""
    files = sorted(path.rglob('*')) if path.is_dir() else [path]
    h = hashlib.sha256()
    for f in (f for f in files if f.is_file()):
        h.update(str(f.relative_to(path)).encode() + hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def refused(path, member, match, check=lambda ds: None, **kwargs):
    """Opening the dataset (then `check`) raises DatasetError: one line naming the dataset, `member` and `match`;
    the dataset's files are unchanged."""
    before = digest(path)
    with pytest.raises(DatasetError) as info:
        check(ImageFolderDataset(str(path), **kwargs))
    message = str(info.value)
    assert '\n' not in message and str(path) in message and member in message, message
    assert match in message, message
    assert digest(path) == before
    return message

#----------------------------------------------------------------------------
# Images: size, mode and format, from the headers alone.

FIRST, SECOND = '00000/img00000000.png', '00000/img00000001.png'


def with_image(name, data, files=None):
    return dict(files or good_files(), **{name: data})


IMAGE_CASES = {
    'wrong size':        (good_files(), FIRST, 'images are 8x8, but resolution=16 was requested', dict(resolution=16)),
    'non-square':        ({**good_files(), FIRST: png((16, 8))}, FIRST, 'is 16x8: resize them (e.g. to 8x8)', {}),
    'not power of two':  ({k: png(12) if k.endswith('.png') else v for k, v in good_files().items()}, FIRST,
                          'square with a power-of-two side', {}),
    'mixed sizes':       (with_image(SECOND, png(16)), SECOND, 'is 16x16 RGB, but 00000/img00000000.png is 8x8 RGB', {}),
    'palette image':     ({k: png(mode='P') if k.endswith('.png') else v for k, v in good_files().items()}, FIRST,
                          'has mode P, but the loader reads only L, RGB or RGBA', {}),
    'cmyk among rgb':    (with_image('00000/img00000002.jpg', png(mode='CMYK', fmt='JPEG')), 'img00000002.jpg',
                          'is 8x8 CMYK, but 00000/img00000000.png is 8x8 RGB', {}),
    'grey among rgb':    (with_image(SECOND, png(mode='L')), SECOND, 'is 8x8 L, but', {}),
    '16-bit grey':       ({k: png(mode='I;16') if k.endswith('.png') else v for k, v in good_files().items()}, FIRST,
                          'has mode I;16', {}),
    'not an image':      (with_image(SECOND, b'these are not the pixels you are looking for'), SECOND,
                          'cannot be read as an image (unknown format or damaged header)', {}),
    'truncated header':  (with_image(SECOND, png()[:20]), SECOND, 'cannot be read as an image', {}),
}


@pytest.mark.parametrize('kind', ['zip', 'dir'])
@pytest.mark.parametrize('case', list(IMAGE_CASES))
def test_bad_images_are_refused_when_opened(tmp_path, kind, case):
    files, member, match, kwargs = IMAGE_CASES[case]
    refused(write(tmp_path, kind, files), member, match, use_labels=True, **kwargs)


@pytest.mark.parametrize('kind', ['zip', 'dir'])
def test_damaged_pixels_are_one_line_errors_when_loaded(tmp_path, kind):
    # A sound header over truncated pixel data passes the up-front check; loading the image names it.
    path = write(tmp_path, kind, with_image(SECOND, png(seed=1)[:-40]))
    dataset = ImageFolderDataset(str(path), use_labels=True)
    dataset[0]
    refused(path, SECOND, 'cannot be decoded (', check=lambda ds: ds[1], use_labels=True)

#----------------------------------------------------------------------------
# The zip itself.

def test_truncated_zip(tmp_path):
    path = write(tmp_path, 'zip', good_files())
    path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
    refused(path, '', 'is not a readable zip (BadZipFile: File is not a zip file; truncated by an interrupted copy?)')


@pytest.mark.parametrize('content', [b'', b'PK\x03\x04 and then nothing', b'{"labels": []}'])
def test_not_a_zip(tmp_path, content):
    (tmp_path / 'data.zip').write_bytes(content)
    refused(tmp_path / 'data.zip', '', 'is not a readable zip')

#----------------------------------------------------------------------------
# dataset.json.

NAMES = [f'00000/img{i:08d}.png' for i in range(3)]

LABEL_CASES = {
    'not utf-8':        ('{"labels": [], "note": "caf\xe9"}'.encode('latin-1'), 'not UTF-8 text (invalid continuation byte'),
    'utf-16':           (labels_json(NAMES).decode().encode('utf-16'), 'not UTF-8'),
    'nested too deep':  (b'[' * 100000 + b']' * 100000, 'nested too deeply'),
    'nan':              (labels_json(NAMES, lambda i: [float('nan') if i == 1 else 0.5] * 25),
                         'non-finite label for 00000/img00000001.png'),
    'infinity':         (labels_json(NAMES, lambda i: [0.5] * 24 + [float('inf')]), 'non-finite label for 00000/img00000000.png'),
    'float32 overflow': (labels_json(NAMES, lambda i: [1e39] * 25), 'non-finite label'),
    'huge integer':     (labels_json(NAMES, lambda i: [10 ** 400] * 25), 'a label is too large for float32'),
    'wrong length':     (labels_json(NAMES, lambda i: [0.5] * (24 if i == 2 else 25)),
                         '00000/img00000000.png has 25 values and 00000/img00000002.png has 24 values'),
    'strings':          (labels_json(NAMES, lambda i: ['0.5'] * 25), "labels must be numbers, but the label of"),
    'missing label':    (labels_json(NAMES[:2]), 'no label for 1 of 3 images, e.g. 00000/img00000002.png'),
}


@pytest.mark.parametrize('kind', ['zip', 'dir'])
@pytest.mark.parametrize('case', list(LABEL_CASES))
def test_bad_labels_are_refused_when_opened(tmp_path, kind, case):
    content, match = LABEL_CASES[case]
    refused(write(tmp_path, kind, with_image('dataset.json', content)), 'dataset.json', match, use_labels=True)


@pytest.mark.parametrize('label', [lambda i: [0.5] * 24, lambda i: i], ids=['24 floats', 'class indices'])
def test_training_needs_25_float_cameras(tmp_path, label):
    path = write(tmp_path, 'zip', with_image('dataset.json', labels_json(NAMES, label)))
    refused(path, 'dataset.json', 'EG3D renders each image from a 25-float camera label',
        check=lambda ds: ds.check_camera_labels(), use_labels=True)
    (tmp_path / 'good').mkdir()
    ImageFolderDataset(str(write(tmp_path / 'good', 'zip', good_files())), use_labels=True).check_camera_labels()


TRAIN_CASES = {
    'mixed sizes':   IMAGE_CASES['mixed sizes'][0],
    'not an image':  IMAGE_CASES['not an image'][0],
    'nan':           with_image('dataset.json', LABEL_CASES['nan'][0]),
    'truncated zip': good_files(),
}


@pytest.mark.parametrize('case', list(TRAIN_CASES))
def test_train_refuses_a_bad_dataset_before_training(tmp_path, case):
    path = write(tmp_path, 'zip', TRAIN_CASES[case])
    if case == 'truncated zip':
        path.write_bytes(path.read_bytes()[:100])
    before = digest(path)
    result = CliRunner().invoke(train.main, base_args(str(path), str(tmp_path / 'runs'), '--dry-run'))
    refused_in_one_line(result, f'--data: {path}')
    assert digest(path) == before and not (tmp_path / 'runs').exists()

#----------------------------------------------------------------------------
# The demo's cached dataset: a damaged cache is noticed and rendered again, atomically.

@pytest.fixture
def small_demo(tmp_path, monkeypatch):
    """A 3-image 16x16 demo dataset cached in tmp_path/cache; returns its bytes."""
    monkeypatch.setenv('EG3D_RLHF_CACHE', str(tmp_path / 'cache'))
    monkeypatch.setitem(demo.DATASET, 'count', 3)
    monkeypatch.setitem(demo.DATASET, 'resolution', 16)
    logged = []
    demo.ensure_dataset(log=logged.append)
    assert len(logged) == 1 and 'first use only' in logged[0]
    return open(demo.dataset_path(), 'rb').read()


def damage(data, how):
    """The demo zip's bytes damaged: truncated, replaced, or rewritten without one image's label."""
    if how == 'truncated':
        return data[:len(data) * 2 // 3]
    if how == 'not a zip':
        return b'<html>503 Service Unavailable</html>'
    buf = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(buf, 'w') as dst:
        for name in src.namelist():
            content = src.read(name)
            if name == 'dataset.json':
                content = json.dumps({'labels': json.loads(content)['labels'][1:]}).encode()
            dst.writestr(name, content)
    return buf.getvalue()


@pytest.mark.parametrize('how', ['truncated', 'not a zip', 'fails validation'])
def test_damaged_demo_cache_is_rendered_again(small_demo, how):
    path = demo.dataset_path()
    with open(path, 'wb') as f:
        f.write(damage(small_demo, how))
    assert demo.dataset_problem() is not None
    logged = []
    assert demo.ensure_dataset(log=logged.append) == path
    assert len(logged) == 1 and '\n' not in logged[0] and logged[0].startswith('The cached demo dataset cannot be used')
    assert path in logged[0] and logged[0].endswith('rendering it again...')
    assert demo.dataset_problem() is None and open(path, 'rb').read() == small_demo     # The same bytes as the first render.
    demo.ensure_dataset(log=logged.append)
    assert len(logged) == 1                                                           # A sound cache is left alone.


def test_interrupted_render_leaves_no_half_written_cache(small_demo, monkeypatch):
    path = demo.dataset_path()
    with open(path, 'wb') as f:
        f.write(small_demo[:1000])
    def killed(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(render, 'render', killed)
    with pytest.raises(KeyboardInterrupt):
        demo.ensure_dataset(log=lambda line: None)
    assert open(path, 'rb').read() == small_demo[:1000] and os.listdir(os.path.dirname(path)) == [os.path.basename(path)]

#----------------------------------------------------------------------------
