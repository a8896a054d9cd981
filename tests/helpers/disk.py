"""A folder whose disk is full (ENOSPC), read-only (EROFS) or forbidden (EACCES), simulated in-process without root."""

import builtins
import errno
import io
import os

#----------------------------------------------------------------------------

def _inside(path, folder):
    try:
        path = os.path.abspath(os.fsdecode(path))
    except TypeError:
        return False
    return path == folder or path.startswith(folder + os.sep)


def _fd_path(fd):
    try:
        return os.readlink(f'/proc/self/fd/{fd}')
    except OSError:
        return ''


def _writing(mode):
    return any(c in str(mode) for c in 'wax+')


class FullFile:
    """A file open for writing on a full disk: the first write puts half its data down, then raises ENOSPC (as a real
    full disk leaves a partial file behind)."""

    def __init__(self, f, path):
        self._f, self._path = f, path

    def write(self, data):
        self._f.write(data[:len(data) // 2])
        self._f.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self._path)

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()

    def __iter__(self):
        return iter(self._f)


def broken_disk(monkeypatch, folder, code):
    """From now on, writing under `folder` fails as on a disk with error `code`: errno.ENOSPC (files and folders are
    made, every write raises after putting half its data down) or errno.EROFS / errno.EACCES (no file opened for
    writing and no folder made). A raw os.write to a file there on a full disk puts half its data down and raises
    ENOSPC without a file name, as the kernel's does. Reading is unchanged. Returns `folder` as an absolute str."""
    folder = os.path.abspath(str(folder))
    real_open, real_os_open, real_mkdir, real_write = builtins.open, os.open, os.mkdir, os.write
    fail = lambda path: OSError(code, os.strerror(code), os.fsdecode(path))

    def open_(file, mode='r', *args, **kwargs):
        path = _fd_path(file) if isinstance(file, int) else file
        if _writing(mode) and _inside(path, folder):
            if code != errno.ENOSPC:
                raise fail(path)
            return FullFile(real_open(file, mode, *args, **kwargs), os.fsdecode(path))
        return real_open(file, mode, *args, **kwargs)

    def os_open(path, flags, *args, **kwargs):
        creates = flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND)
        if creates and code != errno.ENOSPC and _inside(path, folder) and 'dir_fd' not in kwargs:
            raise fail(path)
        return real_os_open(path, flags, *args, **kwargs)

    def mkdir(path, *args, **kwargs):
        if code != errno.ENOSPC and _inside(path, folder):
            raise fail(path)
        return real_mkdir(path, *args, **kwargs)

    def os_write(fd, data):
        if code == errno.ENOSPC and _inside(_fd_path(fd), folder):
            real_write(fd, bytes(data)[:len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(builtins, 'open', open_)
    monkeypatch.setattr(os, 'write', os_write)
    monkeypatch.setattr(io, 'open', open_)
    monkeypatch.setattr(os, 'open', os_open)
    monkeypatch.setattr(os, 'mkdir', mkdir)
    return folder


def chmod_stops_writes(folder):
    """Whether a folder chmod 0o555 refuses writes here (not as root, nor on file systems that ignore modes)."""
    probe = os.path.join(folder, '.probe')
    os.chmod(folder, 0o555)
    try:
        with builtins.open(probe, 'w'):
            pass
    except PermissionError:
        return True
    else:
        os.remove(probe)
        return False
    finally:
        os.chmod(folder, 0o755)

#----------------------------------------------------------------------------
