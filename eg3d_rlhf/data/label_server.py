"""The labeling page's web server: the page, its JSON API over a LabelSession, and the bank's pictures, nothing else."""

import gzip
import http.cookies
import http.server
import ipaddress
import json
import os
import re
import socket
import urllib.parse

from eg3d_rlhf.data.bank import IMAGE_FILE, SLAB_FILE, BankError, preview_file
from eg3d_rlhf.data.invites import COOKIE
from eg3d_rlhf.data.mesh_file import MeshCache
from eg3d_rlhf.data.preferences import CHOICES, LabelError
from eg3d_rlhf.geometry.preview import VIEWS

#----------------------------------------------------------------------------
# GET /                         the page (label_page.html beside this file)
# GET /api/state                the session's state (labeling.LabelSession.state)
# GET /bank/<id>/<picture>.png  a finished sample's previews and RGB render; any other path is 404. <id> is what the
#                               page shows for a side: a bank id (serve), or an opaque token (study, rate) that only
#                               LabelServer.sample_of maps to its bank and id
# GET /bank/<id>/mesh.bin       the sample's preview surface for the 3D view (mesh_file.py), made on demand, gzip
# GET /mesh_viewer.js           the page's WebGL viewer (beside this file)
# POST /api/judge               {"a": ID, "b": ID, "choice": one of CHOICES}: judge the pair being shown
# POST /api/rate                {"sample": ID, "ratings": {criterion: 1..5} or null for a skip} (ratings pages)
# POST /api/undo                {}: take back the last judgement
# POST bodies are JSON (other sites' forms cannot post) of a stated Content-Length up to MAX_BODY bytes; any other
# body, or a POST whose Origin header is another site's, is refused (4xx with {"error"}) before anything is written,
# and the server goes on serving.
# Beyond loopback (--host), every request must carry an invited annotator's token (invites.py), as ?token= (the
# secret link) or the cookie the page sets from it, else 403; the annotator is the token's, never the request's, and
# a POST must also carry the page's own Origin.
# Every request, on any address, must name the server in its Host header (allowed_hosts), else 421: a page on another
# site whose DNS name is rebound to this machine sends its own name, so it never reaches the API or the pictures.

PAGE_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'label_page.html')
RATE_PAGE_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'rate_page.html')
SERVED = frozenset([preview_file(v) for v in VIEWS] + [IMAGE_FILE])  # The only files of a sample folder people see.
SAMPLE_FILE = re.compile(r'/bank/([A-Za-z0-9_.-]+)/([a-z_]+\.png)')   # Matched on the raw path: nothing is decoded.
SAMPLE_MESH = re.compile(r'/bank/([A-Za-z0-9_.-]+)/mesh\.bin')
VIEWER_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'mesh_viewer.js')
LOOPBACK = '127.0.0.1'
MAX_BODY = 4096
JUDGE_KEYS = {'a', 'b', 'choice'}
REQUEST_TIMEOUT = 30         # Seconds a connection may stay silent.


class LabelServer(http.server.ThreadingHTTPServer):
    """The page, its API and the pictures. On loopback one session (one annotator, named on the command line); beyond
    it, one per invited annotator (`sessions`: a Sessions), whose tokens `invites` (invites.Invites) checks."""
    daemon_threads = True

    def __init__(self, address, bank, session, samples=None, sessions=None, invites=None, page=PAGE_FILE,
            allow_hosts=()):
        if ':' in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)
        self.bank, self.session, self.samples = bank, session, samples   # samples(token) -> (Bank, id) or None.
        self.sessions, self.invites = sessions, invites
        self.remote = not is_loopback(address[0])
        self.hosts = allowed_hosts(address[0], allow_hosts)
        with open(page, 'rb') as f:
            self.page = f.read()
        with open(VIEWER_FILE, 'rb') as f:
            self.viewer = f.read()
        self.meshes = MeshCache()

    def run(self):
        """Serve until Ctrl-C, then close the socket."""
        try:
            self.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            self.server_close()

    def sample_of(self, token):
        """(Bank, sample id) of what the page shows for a side (a bank id, or a study's or ratings' opaque token), or
        None for anything else. The one way from a page's side to the bank on the server."""
        if self.samples is not None:
            return self.samples(token)
        return (self.bank, token) if token in self.bank else None

    def sample_file(self, path):
        """The file a /bank/<id>/<name>.png path names, or None unless id names a sample (sample_of), name is a picture
        and the file is a regular file whose real path lies inside its bank (a symlink out of it is never followed)."""
        m = SAMPLE_FILE.fullmatch(path)
        found = None if m is None or m.group(2) not in SERVED else self.sample_of(m.group(1))
        if found is None:
            return None
        bank, sample_id = found
        root = os.path.realpath(bank.root)
        real = os.path.realpath(bank.path(sample_id, m.group(2)))
        if os.path.commonpath([real, root]) != root or not os.path.isfile(real):
            return None
        return real

    def sample_mesh(self, path):
        """The gzip mesh file (mesh_file.MeshCache) a /bank/<id>/mesh.bin path names, or None unless id names a sample
        (sample_of) whose slab is a regular file inside its bank and can be meshed."""
        m = SAMPLE_MESH.fullmatch(path)
        found = None if m is None else self.sample_of(m.group(1))
        if found is None:
            return None
        bank, sample_id = found
        root = os.path.realpath(bank.root)
        real = os.path.realpath(bank.path(sample_id, SLAB_FILE))
        if os.path.commonpath([real, root]) != root or not os.path.isfile(real):
            return None
        try:
            return self.meshes.get(bank, sample_id)
        except BankError:
            return None


class Refused(Exception):
    """A request answered with an error `status` and a short message; nothing was written."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = 'eg3d-rlhf-label'
    timeout = REQUEST_TIMEOUT                           # A client that stalls mid-request is dropped, not waited on.

    def log_message(self, format, *args):               # Quiet: the terminal shows progress, not every picture.
        pass

    def reply(self, status, body, content_type, headers=()):
        self.send_response(status)
        self.send_header('Content-Type', content_type)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header('Content-Length', str(len(body)))
        self.send_header('Cache-Control', 'no-store')
        self.send_header('X-Content-Type-Options', 'nosniff')
        self.end_headers()
        self.wfile.write(body)

    def reply_mesh(self, data):
        """A mesh file (gzip bytes, or None: 404), sent compressed unless the request does not take gzip."""
        if data is None:
            return self.not_found()
        if 'gzip' in self.headers.get('Accept-Encoding', ''):
            return self.reply(200, data, 'application/octet-stream', [('Content-Encoding', 'gzip')])
        self.reply(200, gzip.decompress(data), 'application/octet-stream')

    def reply_json(self, status, data):
        self.reply(status, json.dumps(data).encode('utf-8'), 'application/json')

    def not_found(self):
        self.reply_json(404, dict(error='not found'))

    def host_allowed(self):
        """Does the Host header name this server (a page on another site that rebinds its DNS name to 127.0.0.1 sends
        its own name)? A refusal is answered here."""
        if host_name(self.headers.get('Host', '')) in self.server.hosts:
            return True
        self.reply_json(421, dict(error='unexpected Host header; open the page by the address the server printed, or '
            'add the name with --allow-host NAME'))
        return False

    def cookie_name(self):
        return f'{COOKIE}_{self.server.server_address[1]}'         # Cookies ignore ports: one name per server.

    def token(self):
        """The invite token a request carries: ?token= (the secret link), else the page's cookie; None without."""
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query).get('token')
        if query:
            return query[0]
        cookie = http.cookies.SimpleCookie()
        try:
            cookie.load(self.headers.get('Cookie', ''))
        except http.cookies.CookieError:
            return None
        morsel = cookie.get(self.cookie_name())
        return morsel.value if morsel is not None else None

    def annotator_session(self):
        """The session this request acts in: the server's one on loopback; beyond it, that of the invited annotator
        whose token the request carries (whatever else it claims). None, the refusal answered (403), without one."""
        if not self.server.remote:
            return self.server.session
        name = None if self.server.invites is None else self.server.invites.name_of(self.token())
        if name is None:
            self.reply_json(403, dict(error='open the page by your invite link (tools/label.py invite NAME prints one)'))
            return None
        try:
            return self.server.sessions.get(name)
        except (LabelError, OSError) as err:
            self.reply_json(409, dict(error=str(err)))
            return None

    def origin_allowed(self):
        """Does a POST come from the page's own origin? Another site's Origin is refused (403) anywhere; beyond
        loopback a POST without one too (every browser sends it). A refusal is answered here."""
        origin = self.headers.get('Origin')
        if origin is None and not self.server.remote:
            return True
        if origin is not None and origin.strip().lower() == 'http://' + self.headers.get('Host', '').strip().lower():
            return True
        self.reply_json(403, dict(error='this request does not come from the labeling page (Origin); nothing was written'))
        return False

    def do_GET(self):
        if not self.host_allowed():
            return
        session = self.annotator_session()
        if session is None:
            return
        path = self.path.split('?', 1)[0]
        if path == '/':
            token = self.token() if self.server.remote else None
            cookie = [('Set-Cookie', f'{self.cookie_name()}={token}; HttpOnly; SameSite=Strict; Path=/')] if token else []
            return self.reply(200, self.server.page, 'text/html; charset=utf-8', cookie)
        if path == '/api/state':
            return self.reply_json(200, session.state())
        if path == '/mesh_viewer.js':
            return self.reply(200, self.server.viewer, 'text/javascript; charset=utf-8')
        if SAMPLE_MESH.fullmatch(path):
            return self.reply_mesh(self.server.sample_mesh(path))
        file = self.server.sample_file(path)
        if file is None or not os.path.isfile(file):
            return self.not_found()
        with open(file, 'rb') as f:
            self.reply(200, f.read(), 'image/png')

    def do_POST(self):
        if not self.host_allowed() or not self.origin_allowed():
            return
        session = self.annotator_session()
        if session is None:
            return
        path = self.path.split('?', 1)[0]
        actions = {'/api/undo': self.undo}
        actions.update({'/api/judge': self.judge} if hasattr(session, 'judge') else {'/api/rate': self.rate})
        if path not in actions:
            return self.not_found()
        try:
            body = self.json_body()
            state = actions[path](session, body)
        except Refused as err:
            return self.reply_json(err.status, dict(error=str(err)))
        except ValueError as err:                       # A stale page, or nothing to undo: show the truth again.
            return self.reply_json(409, dict(error=str(err), state=session.state()))
        except OSError as err:                          # The judgement is not on disk: the page must not say saved.
            return self.reply_json(500, dict(error=f'not saved: {err}'))
        self.reply_json(200, dict(saved=True, state=state))

    def json_body(self):
        """The request's body as JSON, read only once its headers say it is JSON of at most MAX_BODY bytes."""
        if self.headers.get('Content-Type', '').split(';')[0].strip() != 'application/json':
            raise Refused(415, 'expected application/json')
        length = content_length(self.headers.get_all('Content-Length', []))
        try:
            data = self.rfile.read(length)
        except TimeoutError:
            raise Refused(408, f'the body did not come within {self.timeout} s') from None
        if len(data) < length:
            raise Refused(400, 'the body is shorter than its Content-Length')
        try:
            return json.loads(data.decode('utf-8'))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise Refused(400, 'the body is not JSON text') from None
        except RecursionError:
            raise Refused(400, 'the body is JSON nested too deeply') from None

    def judge(self, session, body):
        if not isinstance(body, dict) or set(body) != JUDGE_KEYS or not all(isinstance(v, str) for v in body.values()):
            raise Refused(400, 'expected {"a": ID, "b": ID, "choice": CHOICE}, all strings')
        if body['choice'] not in CHOICES:
            raise Refused(400, f'choice must be one of {", ".join(CHOICES)}')
        return session.judge(body['a'], body['b'], body['choice'])

    def rate(self, session, body):
        if not isinstance(body, dict) or set(body) != {'sample', 'ratings'} or not isinstance(body['sample'], str) or not (
                body['ratings'] is None or isinstance(body['ratings'], dict)):
            raise Refused(400, 'expected {"sample": ID, "ratings": {CRITERION: 1-5, ...} or null}')
        return session.rate(body['sample'], body['ratings'])

    def undo(self, session, body):
        if body != {}:
            raise Refused(400, 'an undo takes an empty JSON object, {}')
        return session.undo()


def content_length(values):
    """The number of bytes the one Content-Length header of a request states; Refused: 411 without one, 400 unless it
    is one plain decimal number, 413 above MAX_BODY (so a body is never read that is too long)."""
    if not values:
        raise Refused(411, 'a Content-Length is required')
    digits = values[0].strip()
    if len(values) > 1 or not re.fullmatch(r'[0-9]+', digits):
        raise Refused(400, 'expected one Content-Length, a whole number of bytes')
    if len(digits.lstrip('0')) > len(str(MAX_BODY)) or int(digits) > MAX_BODY:
        raise Refused(413, f'expected a Content-Length of at most {MAX_BODY}')
    return int(digits)

#----------------------------------------------------------------------------

def is_loopback(host):
    """Is `host` (an address or 'localhost') this machine only?"""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == 'localhost'


def host_name(header):
    """The host of a Host header without its port, lower case: '[::1]:8000' -> '::1', 'LocalHost:80' -> 'localhost'."""
    header = header.strip().lower()
    if header.startswith('['):
        return header[1:].split(']', 1)[0]
    return header.rsplit(':', 1)[0] if header.count(':') == 1 else header


WILDCARDS = ('0.0.0.0', '::', '')        # Addresses that listen on every interface.


def allowed_hosts(bound, extra=()):
    """Host header names (host_name's form) a server bound to `bound` answers: the loopback names, `bound` itself and
    `extra` (--allow-host); on every address (WILDCARDS) also this machine's own names (machine_names). Never any name:
    the check stays on whatever the address."""
    names = {'localhost', '127.0.0.1', '::1', bound.lower()} | {host_name(name) for name in extra}
    if bound in WILDCARDS:
        names |= machine_names()
    return frozenset(names - {''})


def machine_names():
    """This machine's own names and addresses, lower case: socket.gethostname(), socket.getfqdn() and the addresses
    getaddrinfo gives for the hostname (an interface address it does not list needs --allow-host)."""
    hostname = socket.gethostname()
    names = {hostname, socket.getfqdn()}
    try:
        names |= {info[4][0].split('%', 1)[0] for info in socket.getaddrinfo(hostname, None)}
    except (OSError, UnicodeError):                 # A hostname that does not resolve: its names alone.
        pass
    return {name.lower() for name in names if name}

#----------------------------------------------------------------------------
