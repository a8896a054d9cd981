"""Invited annotators: a secret link per person, its token stored only as a sha256 hash beside the labels file."""

import hashlib
import hmac
import json
import os
import secrets
import threading

import dnnlib
from eg3d_rlhf.data.labeling import read_companion
from eg3d_rlhf.data.preferences import LabelError, now

#----------------------------------------------------------------------------
# FILE.invites.json beside the labels file FILE (written atomically, never served):
#   {"format": "eg3d_rlhf.invites/1", "invites": {NAME: {"sha256": hex digest of the token, "time": ISO-8601}}}
# The token itself is printed once by `tools/label.py invite` and kept nowhere: a lost link is replaced by inviting
# NAME again with --force, which also revokes the old link.

FORMAT = 'eg3d_rlhf.invites/1'
COOKIE = 'label_token'                  # The cookie the page's requests carry after the link set it (per port).
LIMIT = 16 << 20                        # Bytes an invites file may have (100,000 people): larger is none this wrote.


def invites_path(labels_path):
    return f'{labels_path}.invites.json'


def digest(token):
    return hashlib.sha256(token.encode('utf-8')).hexdigest()


def read_invites(path):
    """{sha256 digest: annotator name} of an invites file ({} when there is none); LabelError naming the file."""
    return {v['sha256']: name for name, v in _entries(path).items()}


def _entries(path):
    """{name: {"sha256", "time"}} of an invites file, checked; {} when there is none. Read through the bounded reader
    (labeling.read_companion): a FIFO, a device or a huge file there is a LabelError, never a hang."""
    if not os.path.lexists(path):
        return {}
    data = read_companion(path, LIMIT, 'delete it and invite again')
    invites = data.get('invites') if data.get('format') == FORMAT else None
    if not isinstance(invites, dict) or not all(isinstance(v, dict) and isinstance(v.get('sha256'), str)
            and len(v['sha256']) == 64 for v in invites.values()):
        raise LabelError(f'{path}: not an invites file of format {FORMAT}; delete it and invite again')
    return invites


def invite(labels_path, name, force=False):
    """A new secret token for annotator `name` of `labels_path`, its hash added to the invites file (atomically). A
    name already invited is a LabelError unless `force` (which replaces, so revokes, its old token)."""
    path = invites_path(labels_path)
    old = _entries(path)
    if name in old and not force:
        raise LabelError(f'{path}: {name} is invited already; pass --force to replace the link (the old one stops working)')
    token = secrets.token_urlsafe(24)
    old[name] = dict(sha256=digest(token), time=now())
    with dnnlib.util.atomic_write(path, 'w', encoding='utf-8') as f:
        json.dump(dict(format=FORMAT, invites=old), f, indent=2)
        f.write('\n')
    return token


class Invites:
    """The invites of a labels file as the server sees them: read again whenever the file changes, so people invited
    while it runs can join. name_of(token) -> annotator name, or None for a missing, unknown or revoked token."""

    def __init__(self, labels_path):
        self.path = invites_path(labels_path)
        self._lock = threading.Lock()
        self._stamp, self._names, self._error = None, {}, None
        self.reload()

    def reload(self):
        """The number of people invited; LabelError for a damaged file, which is read once per change (until it
        changes, the same error again and nobody let in)."""
        try:
            stat = os.stat(self.path)
            stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino, stat.st_mode)
        except OSError:                                 # None there (or a link to nothing): nobody invited.
            stamp = None
        with self._lock:
            if stamp != self._stamp:
                self._stamp = stamp
                try:
                    self._names, self._error = read_invites(self.path), None
                except LabelError as err:
                    self._names, self._error = {}, str(err)
            if self._error is not None:
                raise LabelError(self._error)
            return len(self._names)

    def name_of(self, token):
        if not token:
            return None
        try:
            self.reload()
        except LabelError:                              # A damaged file lets nobody in; the server keeps serving.
            return None
        d = digest(token)
        for known, name in self._names.items():
            if hmac.compare_digest(known, d):
                return name
        return None

#----------------------------------------------------------------------------
