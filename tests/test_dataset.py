"""Tests for training/dataset.py: EG3D-format image datasets, camera-label mirroring and error messages; bad datasets
are refused in one line naming the file, and left unchanged; a damaged demo cache is rendered again."""

import hashlib
import io
import json
import math
import os
import pickle
import zipfile

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

import train
from eg3d_rlhf.synthetic import dataset_writer, demo, render
from tests.helpers.cli import refused_in_one_line
from tests.helpers.train import base_args
from training import camera_utils
from training.dataset import Dataset, DatasetError, ImageFolderDataset, mirror_camera_label
from training.volumetric_rendering.ray_sampler import RaySampler

#----------------------------------------------------------------------------
# Tiny datasets, written procedurally.

def camera_labels(n, seed=0, skew=0.0, cx=0.5):
    """n EG3D camera labels [n, 25] around the FFHQ pivot with random yaw/pitch (float32)."""
    rng = np.random.RandomState(seed)
    pivot = torch.tensor([0, 0, 0.2])
    labels = []
    for _ in range(n):
        yaw, pitch = math.pi / 2 + rng.uniform(-0.6, 0.6), math.pi / 2 + rng.uniform(-0.3, 0.3)
        pose = camera_utils.LookAtPoseSampler.sample(yaw, pitch, pivot, radius=2.7)
        K = torch.tensor([[4.2647, skew, cx], [0, 4.2647, 0.5], [0, 0, 1]])
        labels.append(camera_utils.camera_label(pose, K)[0].numpy())
    return np.stack(labels).astype(np.float32)


def write_dataset(tmp_path, kind, images, labels=None, json_text=None):
    """Write {fname: HWC uint8 array} as PNGs (+ dataset.json) to a folder or a zip; return its path."""
    files = {}
    for fname, array in images.items():
        buf = io.BytesIO()
        PIL.Image.fromarray(array).save(buf, format='PNG')
        files[fname] = buf.getvalue()
    if labels is not None:
        json_text = json.dumps({'labels': labels})
    if json_text is not None:
        files['dataset.json'] = json_text.encode()
    os.makedirs(tmp_path, exist_ok=True)
    if kind == 'zip':
        path = str(tmp_path / 'data.zip')
        with zipfile.ZipFile(path, 'w') as z:
            for fname, data in files.items():
                z.writestr(fname, data)
        return path
    path = str(tmp_path / 'data')
    for fname, data in files.items():
        os.makedirs(os.path.dirname(os.path.join(path, fname)), exist_ok=True)
        with open(os.path.join(path, fname), 'wb') as f:
            f.write(data)
    return path


def random_images(n, res=8, channels=3, seed=0):
    rng = np.random.RandomState(seed)
    shape = (res, res, channels) if channels > 1 else (res, res)
    return {f'img00000/img{i:08d}.png': rng.randint(0, 256, size=shape, dtype=np.uint8) for i in range(n)}


def standard_dataset(tmp_path, kind, n=5, **kwargs):
    """n images with camera labels listed in shuffled order; returns (path, images sorted by name, labels)."""
    images = random_images(n)
    labels = camera_labels(n)
    order = np.random.RandomState(1).permutation(n)
    names = sorted(images)
    entries = [[names[i], labels[i].tolist()] for i in order]
    path = write_dataset(tmp_path, kind, images, labels=entries, **kwargs)
    return path, [images[k] for k in names], labels

#----------------------------------------------------------------------------

@pytest.mark.parametrize('kind', ['zip', 'dir'])
def test_items_labels_and_flips(tmp_path, kind):
    path, images, labels = standard_dataset(tmp_path, kind)
    ds = ImageFolderDataset(path, resolution=8, use_labels=True, xflip=True)
    assert (len(ds), ds.name, ds.image_shape, ds.num_channels, ds.resolution) == (10, 'data', [3, 8, 8], 3, 8)
    assert (ds.label_shape, ds.label_dim, ds.has_labels, ds.has_onehot_labels) == ([25], 25, True, False)
    for i in range(5):
        image, label = ds[i]
        assert image.dtype == np.uint8 and label.dtype == np.float32
        np.testing.assert_array_equal(image, images[i].transpose(2, 0, 1))
        np.testing.assert_array_equal(label, labels[i]) # Sorted-filename order, whatever the JSON order.
        flipped, flipped_label = ds[i + 5]
        np.testing.assert_array_equal(flipped, images[i].transpose(2, 0, 1)[:, :, ::-1])
        np.testing.assert_array_equal(flipped_label, mirror_camera_label(labels[i]))
        np.testing.assert_array_equal(ds.get_label(i + 5), flipped_label)
        d = ds.get_details(i + 5)
        assert (d.raw_idx, d.xflip) == (i, True) and not ds.get_details(i).xflip
        np.testing.assert_array_equal(d.raw_label, labels[i]) # The stored label, not mirrored.


def test_sizes_and_max_size_subset(tmp_path):
    path, _images, labels = standard_dataset(tmp_path, 'dir', n=20)
    assert len(ImageFolderDataset(path)) == 20
    assert len(ImageFolderDataset(path, max_size=50, xflip=True)) == 40
    for seed in [0, 3]:
        ds = ImageFolderDataset(path, max_size=6, xflip=True, random_seed=seed, use_labels=True)
        assert len(ds) == 12
        # The same subset EG3D takes: shuffle 0..N-1 with RandomState(seed), keep the first max_size, sorted.
        expected = np.arange(20)
        np.random.RandomState(seed).shuffle(expected)
        expected = np.sort(expected[:6])
        got = [ds.get_details(i).raw_idx for i in range(12)]
        assert got == expected.tolist() * 2
        np.testing.assert_array_equal(ds[2][1], labels[expected[2]])
    assert [ImageFolderDataset(path, max_size=6, random_seed=s).get_details(0).raw_idx for s in [0, 3]] != [0, 0]


def test_unlabelled_and_class_labels(tmp_path):
    images = random_images(3, channels=1)
    ds = ImageFolderDataset(write_dataset(tmp_path, 'zip', images), xflip=True)
    image, label = ds[4]
    assert image.shape == (1, 8, 8) and label.shape == (0,) and label.dtype == np.float32
    assert (ds.label_shape, ds.has_labels) == ([0], False)

    names = sorted(images)
    path = write_dataset(tmp_path, 'dir', images, labels=[[names[0], 2], [names[1], 0], [names[2], 1]])
    ds = ImageFolderDataset(path, use_labels=True, xflip=True)
    assert ds.has_onehot_labels and ds.label_dim == 3
    np.testing.assert_array_equal(ds.get_label(3), [0, 0, 1]) # Class labels are not mirrored.
    np.testing.assert_array_equal(ds[1][1], [1, 0, 0])


def test_pickle_and_worker_processes(tmp_path):
    path, images, labels = standard_dataset(tmp_path, 'zip', n=4)
    ds = ImageFolderDataset(path, use_labels=True, xflip=True)
    ds[0] # Opens the zip.
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._zipfile is None
    for i in [0, 3, 5]:
        np.testing.assert_array_equal(clone[i][0], ds[i][0])
        np.testing.assert_array_equal(clone[i][1], ds[i][1])
    # Two worker processes read the zip at once; each opens its own handle.
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2)
    batches = list(loader)
    got = torch.cat([b[0] for b in batches]).numpy()
    np.testing.assert_array_equal(got[:4], np.stack(images).transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(torch.cat([b[1] for b in batches]).numpy()[:4], labels)

#----------------------------------------------------------------------------
# The mirrored camera sees the mirrored world as the mirrored image.

def project(label, points):
    """Normalised (u, v) [P, 2] of world points [P, 3] under an EG3D label (OpenCV cam2world, intrinsics K)."""
    label = label.astype(np.float64)
    cam2world, K = label[:16].reshape(4, 4), label[16:].reshape(3, 3)
    cam = (points - cam2world[:3, 3]) @ cam2world[:3, :3] # R^T (p - t), row by row.
    assert np.all(cam[:, 2] > 0)
    uvw = cam @ K.T
    return uvw[:, :2] / uvw[:, 2:]


@pytest.mark.parametrize('skew,cx', [(0.0, 0.5), (0.3, 0.42)])
def test_mirrored_camera_projects_mirrored_points(tmp_path, skew, cx):
    labels = camera_labels(4, seed=2, skew=skew, cx=cx)
    images = random_images(4)
    names = sorted(images)
    path = write_dataset(tmp_path, 'zip', images, labels=[[names[i], labels[i].tolist()] for i in range(4)])
    ds = ImageFolderDataset(path, use_labels=True, xflip=True)
    points = np.random.RandomState(0).uniform(-0.5, 0.5, size=(200, 3)) + [0, 0, 0.2]
    mirror = np.array([-1.0, 1.0, 1.0])
    for i in range(4):
        original, flipped = ds.get_label(i), ds.get_label(i + 4)
        R = flipped[:16].reshape(4, 4)[:3, :3].astype(np.float64)
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-6)
        assert np.linalg.det(R) == pytest.approx(1, abs=1e-6)
        uv, uv_flipped = project(original, points), project(flipped, points * mirror)
        np.testing.assert_allclose(uv_flipped[:, 0], 1 - uv[:, 0], atol=1e-5)
        np.testing.assert_allclose(uv_flipped[:, 1], uv[:, 1], atol=1e-5)
        np.testing.assert_allclose(mirror_camera_label(flipped), original, rtol=0, atol=1e-7) # An involution.


def test_mirrored_camera_rays_match_flipped_pixels():
    # EG3D's ray sampler: the ray through pixel (row, W-1-col) of the mirrored camera is the mirror of the ray
    # through pixel (row, col) of the original, so image[:, :, ::-1] is what the mirrored camera renders.
    labels = torch.from_numpy(camera_labels(3, seed=5, skew=0.2, cx=0.45))
    flipped = torch.from_numpy(mirror_camera_label(labels.numpy()))
    res = 6
    sampler = RaySampler()
    o, d = sampler(labels[:, :16].view(-1, 4, 4), labels[:, 16:].view(-1, 3, 3), res)
    o2, d2 = sampler(flipped[:, :16].view(-1, 4, 4), flipped[:, 16:].view(-1, 3, 3), res)
    mirror = torch.tensor([-1.0, 1.0, 1.0])
    d_image, d2_image = d.view(3, res, res, 3), d2.view(3, res, res, 3)
    torch.testing.assert_close(d2_image, d_image.flip(2) * mirror, atol=1e-5, rtol=0)
    torch.testing.assert_close(o2, o * mirror, atol=0, rtol=0)

#----------------------------------------------------------------------------
# Each problem gets its own one-line error.

def expect_error(exc, match, path, **kwargs):
    with pytest.raises(exc, match=match) as info:
        ImageFolderDataset(path, **kwargs)
    assert '\n' not in str(info.value)


def test_path_errors(tmp_path):
    expect_error(FileNotFoundError, 'dataset not found', str(tmp_path / 'nope.zip'))
    (tmp_path / 'notes.txt').write_text('hi')
    expect_error(DatasetError, 'must be a folder or a .zip', str(tmp_path / 'notes.txt'))
    expect_error(DatasetError, 'no image files', write_dataset(tmp_path, 'zip', {}, json_text='{"labels": []}'))


def test_image_errors(tmp_path):
    images = random_images(3)
    images['img00000/img00000001.png'] = np.zeros((16, 16, 3), dtype=np.uint8)
    # Found when the dataset is opened (from the image headers), not when the odd image is first loaded.
    expect_error(DatasetError, r'img00000001\.png is 16x16 RGB, but img00000/img00000000\.png is 8x8 RGB: all images '
        'must match', write_dataset(tmp_path / 'a', 'dir', images))
    expect_error(DatasetError, 'square with a power-of-two side.*12x12.*to 8x8',
        write_dataset(tmp_path / 'b', 'zip', random_images(2, res=12)))
    nonsquare = {'a.png': np.zeros((8, 16, 3), dtype=np.uint8)}
    expect_error(DatasetError, 'square with a power-of-two side.*16x8', write_dataset(tmp_path / 'c', 'zip', nonsquare))
    expect_error(DatasetError, 'images are 8x8, but resolution=16', write_dataset(tmp_path / 'd', 'zip', random_images(2)), resolution=16)


def label_error_cases():
    names = sorted(random_images(3))
    cam = [0.0] * 25
    return {
        'no dataset.json':  (DatasetError, 'needs a dataset.json', None, {}),
        'garbled json':     (DatasetError, 'dataset.json is not valid JSON', '{"labels": [[', {}),
        'wrong structure':  (DatasetError, r'must hold \{"labels"', '{"labels": null}', {}),
        'missing image':    (DatasetError, 'no label for 1 of 3 images, e.g. img00000/img00000002.png',
                             [[names[0], cam], [names[1], cam]], {}),
        'lengths differ':   (DatasetError, 'img00000000.png has 25 values and img00000/img00000001.png has 24 values',
                             [[names[0], cam], [names[1], cam[:24]], [names[2], cam]], {}),
        'not numbers':      (DatasetError, 'labels must be numbers', [[n, ['x'] * 25] for n in names], {}),
        'non-finite':       (DatasetError, 'non-finite label for img00000/img00000001.png',
                             '{"labels": [["%s", [0]], ["%s", [NaN]], ["%s", [1]]]}' % tuple(names), {}),
        'xflip non-camera': (DatasetError, 'xflip mirrors camera labels, which must be 25 floats', [[n, [1.0, 2.0]] for n in names],
                             dict(xflip=True)),
    }


@pytest.mark.parametrize('case', list(label_error_cases()))
@pytest.mark.parametrize('kind', ['zip', 'dir'])
def test_label_errors(tmp_path, kind, case):
    exc, match, content, kwargs = label_error_cases()[case]
    labels, text = (content, None) if isinstance(content, list) else (None, content)
    path = write_dataset(tmp_path, kind, random_images(3), labels=labels, json_text=text)
    expect_error(exc, match, path, use_labels=True, **kwargs)
    assert len(ImageFolderDataset(path, use_labels=False)) == 3 # Labels are only read when asked for.


def test_base_class_needs_loaders():
    ds = Dataset(name='abstract', raw_shape=[2, 3, 4, 4], use_labels=True)
    with pytest.raises(NotImplementedError):
        ds[0]

#----------------------------------------------------------------------------
# Bad datasets are refused on opening, in one line naming the file, and left unchanged. Tiny datasets for them,
# written procedurally: {member: bytes} into a zip or a folder.

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


def test_the_bundled_demo_dataset_is_copied_not_rendered(tmp_path, monkeypatch):
    # The real demo dataset ships in checkpoints/: an empty or damaged cache gets a copy of it, byte for byte.
    monkeypatch.setenv('EG3D_RLHF_CACHE', str(tmp_path / 'cache'))
    def no_render(*args, **kwargs):
        raise AssertionError('rendered')
    monkeypatch.setattr(render, 'render', no_render)
    bundled = open(demo.bundled_dataset(), 'rb').read()
    for damaged in (None, bundled[:5000]):
        if damaged is not None:
            with open(demo.dataset_path(), 'wb') as f:
                f.write(damaged)
        logged = []
        assert demo.ensure_dataset(log=logged.append) == demo.dataset_path()
        assert len(logged) == 1 and ('copying the bundled one again' in logged[0] if damaged else
            logged[0].startswith('Copying the bundled demo dataset (256 synthetic heads)'))
        assert open(demo.dataset_path(), 'rb').read() == bundled
        assert os.listdir(tmp_path / 'cache') == [os.path.basename(demo.dataset_path())]


def test_the_bundled_demo_dataset_is_what_the_renderer_makes(tmp_path):
    # Its first 8 heads rendered again: the same PNG bytes, labels and parameters (sample i depends only on (seed, i)).
    assert demo.dataset_problem(demo.bundled_dataset()) is None
    fresh = tmp_path / 'first8.zip'
    dataset_writer.write_dataset(str(fresh), **dict(demo.DATASET, count=8), progress=False)
    with zipfile.ZipFile(demo.bundled_dataset()) as zb, zipfile.ZipFile(fresh) as zf:
        pngs = [n for n in zf.namelist() if n.endswith('.png')]
        assert len(pngs) == 8 and all(zb.read(n) == zf.read(n) for n in pngs)
        labels = lambda z, n: json.loads(z.read('dataset.json'))['labels'][:n]
        assert labels(zb, 8) == labels(zf, 8)
        params = lambda z: z.read(dataset_writer.PARAMS_NAME).decode().splitlines()[:8]
        assert params(zb) == params(zf)


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
