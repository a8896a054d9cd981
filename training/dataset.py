"""Image datasets in EG3D's format: a folder or zip of images plus dataset.json labels (25-float cameras)."""

import os
import zipfile
import zlib

import numpy as np
import PIL.Image
import torch

import dnnlib

#----------------------------------------------------------------------------
# Mirroring a camera label about the world YZ plane.
#
# Mirror the world with M = diag(-1, 1, 1). A camera (R, t) becomes (M R M, M t): the left M mirrors the world,
# the right M flips the camera's own x axis so that R stays a rotation. A point p seen at camera coordinates
# (x, y, z) is then, as M p, seen at (-x, y, z). With u = (fx x + s y) / z + cx and v = fy y / z + cy in
# normalised image coordinates, the mirrored point lands at u' = 1 - u and the same v when the intrinsics become
# fx, -s, 1 - cx (K' = A K M with A the image flip u -> 1 - u). Pixel column i of a W-wide image (centre
# (i + 0.5) / W) goes to column W - 1 - i: exactly image[:, :, ::-1]. On cam2world this negates entries
# (0,1), (0,2), (1,0), (2,0) and (0,3), as EG3D's FFHQ preprocessing does when it writes mirrored copies.

_WORLD_MIRROR = np.diag([-1, 1, 1, 1]).astype(np.float32)                       # Acts on homogeneous cam2world.
_CAMERA_X_FLIP = np.diag([-1, 1, 1]).astype(np.float32)                         # Camera x -> -x.
_IMAGE_MIRROR = np.array([[-1, 0, 1], [0, 1, 0], [0, 0, 1]], dtype=np.float32)  # Normalised u -> 1 - u.

def mirror_camera_label(label):
    """The camera label [..., 25] (cam2world 4x4, then normalised intrinsics 3x3) of the x-flipped image."""
    label = np.asarray(label, dtype=np.float32)
    if label.shape[-1] != 25:
        raise ValueError(f'mirror_camera_label: expected 25-float camera labels, got shape {list(label.shape)}')
    lead = label.shape[:-1]
    cam2world = _WORLD_MIRROR @ label[..., :16].reshape(*lead, 4, 4) @ _WORLD_MIRROR
    intrinsics = _IMAGE_MIRROR @ label[..., 16:].reshape(*lead, 3, 3) @ _CAMERA_X_FLIP
    return np.concatenate([cam2world.reshape(*lead, 16), intrinsics.reshape(*lead, 9)], axis=-1)

#----------------------------------------------------------------------------

class DatasetError(ValueError):
    """A dataset that cannot be trained on; the one-line message names the file and says how to fix it."""

#----------------------------------------------------------------------------

class Dataset(torch.utils.data.Dataset):
    """Images [C, H, W] uint8 with labels; subclasses load raw images and labels by raw index."""

    def __init__(self,
        name,                       # Name of the dataset.
        raw_shape,                  # Shape of the raw image data [N, C, H, W].
        max_size        = None,     # Keep at most this many raw images (a fixed random subset); None = all. Before xflip.
        use_labels      = False,    # Load labels? False = every label is empty (label_dim 0).
        xflip           = False,    # Append a mirrored copy of every image (and camera label), doubling the size.
        random_seed     = 0,        # Seed for the max_size subset.
    ):
        self._name = name
        self._raw_shape = list(raw_shape)
        self._use_labels = use_labels
        self._raw_labels = None
        self._label_shape = None

        # The max_size subset is the same draw as EG3D's (shuffle with RandomState(random_seed)), kept in file order.
        self._raw_idx = np.arange(self._raw_shape[0], dtype=np.int64)
        if max_size is not None and self._raw_idx.size > max_size:
            self._raw_idx = np.sort(np.random.RandomState(random_seed).permutation(self._raw_idx.size)[:max_size])

        # Mirrored copies follow the originals: item i + len/2 mirrors item i.
        self._xflip = np.zeros(self._raw_idx.size, dtype=bool)
        if xflip:
            self._raw_idx = np.tile(self._raw_idx, 2)
            self._xflip = np.concatenate([self._xflip, np.ones_like(self._xflip)])

    def _load_raw_image(self, raw_idx):     # To be overridden: image [C, H, W] uint8.
        raise NotImplementedError

    def _load_raw_labels(self):             # To be overridden: float32 [N, D] or int64 [N] class indices.
        raise NotImplementedError

    def _raw_name(self, raw_idx):           # How error messages name an image.
        return f'image {raw_idx}'

    def _label_file(self):                  # How error messages name where the labels come from.
        return self._name

    def close(self):                        # To be overridden: release open files.
        pass

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def _get_raw_labels(self):
        if self._raw_labels is None:
            labels = self._load_raw_labels() if self._use_labels else np.zeros([self._raw_shape[0], 0], dtype=np.float32)
            where = self._label_file()
            if labels.shape[0] != self._raw_shape[0] or labels.dtype not in (np.float32, np.int64):
                raise DatasetError(f'{where}: labels must be float32 [N, D] or int64 [N] with N = {self._raw_shape[0]}, '
                    f'got {labels.dtype} {list(labels.shape)}')
            if labels.dtype == np.int64 and (labels.ndim != 1 or np.any(labels < 0)):
                raise DatasetError(f'{where}: class labels must be non-negative integers, one per image')
            if labels.dtype == np.float32 and not np.all(np.isfinite(labels)):
                bad = int(np.nonzero(~np.all(np.isfinite(labels.reshape(labels.shape[0], -1)), axis=1))[0][0])
                raise DatasetError(f'{where}: non-finite label for {self._raw_name(bad)} (nan, inf or too large for '
                    f'float32); fix that label')
            if labels.dtype == np.float32 and self._xflip.any() and labels.shape[1:] not in ((0,), (25,)):
                raise DatasetError(f'{where}: xflip mirrors camera labels, which must be 25 floats; '
                    f'these labels have shape {list(labels.shape[1:])}')
            self._raw_labels = labels
        return self._raw_labels

    def __len__(self):
        return self._raw_idx.size

    def __getitem__(self, idx):
        raw_idx = self._raw_idx[idx]
        image = self._load_raw_image(raw_idx)
        if list(image.shape) != self.image_shape or image.dtype != np.uint8:
            raise DatasetError(f'{self._name}: {self._raw_name(raw_idx)} is {image.dtype} {list(image.shape)} (CHW), '
                f'but the dataset holds uint8 {self.image_shape} (from its first image); all images must match')
        if self._xflip[idx]:
            image = image[:, :, ::-1]
        return image.copy(), self.get_label(idx)

    def get_label(self, idx):
        """Label of item idx: one-hot float32 for class labels; mirrored for the x-flipped copy of a camera label."""
        label = self._get_raw_labels()[self._raw_idx[idx]]
        if label.dtype == np.int64:
            onehot = np.zeros(self.label_shape, dtype=np.float32)
            onehot[label] = 1
            return onehot
        if self._xflip[idx] and label.size > 0:
            return mirror_camera_label(label)
        return label.copy()

    def check_camera_labels(self):
        """DatasetError unless every label is an EG3D camera: 25 floats (cam2world 4x4, then intrinsics 3x3)."""
        labels = self._get_raw_labels()
        if labels.dtype != np.float32 or labels.shape[1:] != (25,):
            got = 'class indices' if labels.dtype == np.int64 else f'{labels.shape[1]} floats each'
            raise DatasetError(f'{self._label_file()}: EG3D renders each image from a 25-float camera label '
                f'(16 cam2world + 9 intrinsics), but these labels are {got}; re-export the dataset with camera labels')

    def get_details(self, idx):
        """raw_idx, xflip and the stored (unmirrored) raw_label of item idx."""
        d = dnnlib.EasyDict()
        d.raw_idx = int(self._raw_idx[idx])
        d.xflip = bool(self._xflip[idx])
        d.raw_label = self._get_raw_labels()[d.raw_idx].copy()
        return d

    @property
    def name(self):
        return self._name

    @property
    def image_shape(self):
        return list(self._raw_shape[1:])

    @property
    def num_channels(self):
        assert len(self.image_shape) == 3 # CHW
        return self.image_shape[0]

    @property
    def resolution(self):
        assert len(self.image_shape) == 3 and self.image_shape[1] == self.image_shape[2]
        return self.image_shape[1]

    @property
    def label_shape(self):
        if self._label_shape is None:
            labels = self._get_raw_labels()
            self._label_shape = [int(labels.max()) + 1] if labels.dtype == np.int64 else list(labels.shape[1:])
        return list(self._label_shape)

    @property
    def label_dim(self):
        assert len(self.label_shape) == 1
        return self.label_shape[0]

    @property
    def has_labels(self):
        return any(x != 0 for x in self.label_shape)

    @property
    def has_onehot_labels(self):
        return self._get_raw_labels().dtype == np.int64

#----------------------------------------------------------------------------

# Image modes _load_raw_image turns into uint8 [C, H, W], with their channel counts. Others would load as another
# dtype (I;16, F), as palette indices (P) or as channels the networks misread (CMYK, YCbCr, LA).
_CHANNELS = {'L': 1, 'RGB': 3, 'RGBA': 4}

# What reading a damaged image or zip member raises: PIL's errors are OSErrors (UnidentifiedImageError, truncated
# data) or ValueErrors, zipfile's BadZipFile (bad header or CRC), zlib's for a damaged deflate stream.
_UNREADABLE = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, PIL.Image.DecompressionBombError)


def _reason(err):
    """One line saying why a file could not be read."""
    if isinstance(err, PIL.UnidentifiedImageError):
        return 'unknown format or damaged header'
    return ' '.join(f'{type(err).__name__}: {err}'.split())


def _power_of_two_below(n):
    return 1 << (max(n, 1).bit_length() - 1)


class ImageFolderDataset(Dataset):
    """Images in a folder or a zip (any depth, sorted by relative path), labels from dataset.json at its root.

    Opening checks every image's header (size and mode, no pixels decoded) and the labels, so that a dataset that
    cannot be trained on raises DatasetError here rather than mid-training.
    """

    def __init__(self,
        path,                       # Folder or .zip holding the images (and dataset.json).
        resolution      = None,     # Required image resolution; None = whatever the images are.
        **super_kwargs,             # Arguments for the Dataset base class.
    ):
        self._path = path
        self._zipfile = None
        self._zipfile_pid = None
        if os.path.isdir(path):
            self._type = 'dir'
            self._all_fnames = {os.path.relpath(os.path.join(root, f), start=path).replace(os.sep, '/')
                for root, _dirs, files in os.walk(path) for f in files}
        elif os.path.isfile(path) and self._file_ext(path) == '.zip':
            self._type = 'zip'
            self._all_fnames = set(self._get_zipfile().namelist())
        elif not os.path.exists(path):
            raise FileNotFoundError(f'dataset not found: {path}')
        else:
            raise DatasetError(f'{path}: a dataset must be a folder or a .zip file of images')

        PIL.Image.init()
        self._image_fnames = sorted(f for f in self._all_fnames if self._file_ext(f) in PIL.Image.EXTENSION)
        if len(self._image_fnames) == 0:
            raise DatasetError(f'{path}: no image files (PNG, JPG, ...) found; put the images in it (at any depth)')
        shape = self._check_images(resolution)
        name = os.path.splitext(os.path.basename(os.path.normpath(path)))[0]
        super().__init__(name=name, raw_shape=[len(self._image_fnames)] + shape, **super_kwargs)
        self._get_raw_labels() # Report label problems now rather than mid-training.

    @staticmethod
    def _file_ext(fname):
        return os.path.splitext(fname)[1].lower()

    def _where(self, fname):
        return f'{self._path}: {fname}'

    def _get_zipfile(self):
        # Reopen in every process: a zip handle inherited through fork shares its file offset with the parent.
        if self._zipfile is None or self._zipfile_pid != os.getpid():
            try:
                self._zipfile = zipfile.ZipFile(self._path)
            except zipfile.BadZipFile as e:
                raise DatasetError(f'{self._path} is not a readable zip ({_reason(e)}; truncated by an interrupted '
                    f'copy?): copy it again or re-export it') from None
            self._zipfile_pid = os.getpid()
        return self._zipfile

    def _open_file(self, fname):
        if self._type == 'dir':
            return open(os.path.join(self._path, fname), 'rb')
        return self._get_zipfile().open(fname, 'r')

    def close(self):
        try:
            if self._zipfile is not None:
                self._zipfile.close()
        finally:
            self._zipfile = None

    def __getstate__(self):
        return dict(self.__dict__, _zipfile=None, _zipfile_pid=None)

    def _raw_name(self, raw_idx):
        return self._image_fnames[raw_idx]

    def _label_file(self):
        return self._where('dataset.json')

    def _image_header(self, fname):
        """(size, mode) of an image, from its header alone."""
        try:
            with self._open_file(fname) as f, PIL.Image.open(f) as image:
                return image.size, image.mode
        except _UNREADABLE as e:
            raise DatasetError(f'{self._where(fname)} cannot be read as an image ({_reason(e)}): '
                f'remove it or save it again as PNG') from None

    def _check_images(self, resolution):
        """[C, H, W] of the images, from their headers: all of one mode and one square power-of-two size."""
        first = self._image_fnames[0]
        (w, h), mode = self._image_header(first)
        if mode not in _CHANNELS:
            raise DatasetError(f'{self._where(first)} has mode {mode}, but the loader reads only L, RGB or RGBA '
                f'images (1, 3 or 4 channels): convert the images to RGB')
        if h != w or h < 1 or (h & (h - 1)) != 0:
            side = _power_of_two_below(min(w, h))
            raise DatasetError(f'{self._path}: images must be square with a power-of-two side, but {first} is {w}x{h}: '
                f'resize them (e.g. to {side}x{side})')
        if resolution is not None and h != resolution:
            raise DatasetError(f'{self._path}: images are {w}x{h}, but resolution={resolution} was requested: '
                f'resize {first} and the others to {resolution}x{resolution}')
        for fname in self._image_fnames[1:]:
            (w2, h2), mode2 = self._image_header(fname)
            if (w2, h2, mode2) != (w, h, mode):
                raise DatasetError(f'{self._where(fname)} is {w2}x{h2} {mode2}, but {first} is {w}x{h} {mode}: '
                    f'all images must match; resize or convert it to {w}x{h} {mode}')
        return [_CHANNELS[mode], h, w]

    def _load_raw_image(self, raw_idx):
        fname = self._image_fnames[raw_idx]
        try:
            with self._open_file(fname) as f:
                image = np.array(PIL.Image.open(f))
        except _UNREADABLE as e: # Pixel data damaged after a sound header: found only now.
            raise DatasetError(f'{self._where(fname)} cannot be decoded ({_reason(e)}): '
                f'remove it or save it again as PNG') from None
        if image.ndim == 2:
            image = image[:, :, np.newaxis] # HW => HWC
        return image.transpose(2, 0, 1) # HWC => CHW

    def _read_json(self, fname):
        """The parsed JSON file fname: UTF-8 text, nested no deeper than Python's recursion limit."""
        where = self._where(fname)
        try:
            with self._open_file(fname) as f:
                data = f.read()
        except _UNREADABLE as e:
            raise DatasetError(f'{where} cannot be read ({_reason(e)}); re-export the dataset') from None
        return dnnlib.util.decode_json(data, f'{where} is not valid JSON:', DatasetError, hint='; save it again as UTF-8 JSON')

    def _load_raw_labels(self):
        where = self._label_file()
        if 'dataset.json' not in self._all_fnames:
            raise DatasetError(f'{self._path}: use_labels=True needs a dataset.json at the dataset root; none found')
        data = self._read_json('dataset.json')
        labels = data.get('labels') if isinstance(data, dict) else None
        if not isinstance(labels, list) or not all(isinstance(x, list) and len(x) == 2 for x in labels):
            raise DatasetError(f'{where} must hold {{"labels": [[relative_fname, label], ...]}}')
        labels = dict((str(k), v) for k, v in labels)
        missing = [f for f in self._image_fnames if f not in labels]
        if missing:
            raise DatasetError(f'{where} has no label for {len(missing)} of {len(self._image_fnames)} images, '
                f'e.g. {missing[0]}: every image needs a [fname, label] entry')
        rows = [labels[f] for f in self._image_fnames]

        # Class indices (one integer per image) or float vectors of one common length.
        if all(type(r) is int for r in rows):
            return self._label_array(rows, np.int64)
        describe = lambda r: f'{len(r)} values' if isinstance(r, list) else f'{r!r:.20}'
        for f, r in zip(self._image_fnames, rows):
            if not isinstance(r, list) or len(r) != len(rows[0]):
                raise DatasetError(f'{where}: labels must be lists of one length (or class integers for all images), '
                    f'but {self._image_fnames[0]} has {describe(rows[0])} and {f} has {describe(r)}')
            bad = [x for x in r if type(x) not in (int, float)]
            if bad:
                raise DatasetError(f'{where}: labels must be numbers, but the label of {f} holds {bad[0]!r:.20}')
        return self._label_array(rows, np.float32)

    def _label_array(self, rows, dtype):
        try:
            with np.errstate(over='ignore'): # Floats beyond float32 become inf, reported as non-finite.
                return np.array(rows, dtype=dtype)
        except OverflowError:
            raise DatasetError(f'{self._label_file()}: a label is too large for {np.dtype(dtype).name}; fix it') from None

#----------------------------------------------------------------------------
