"""The labeling page's web server: the page, its JSON API over a LabelSession, and the bank's pictures, nothing else."""

import http.server
import ipaddress
import json
import os
import re
import socket

from eg3d_rlhf.data.bank import IMAGE_FILE, preview_file
from eg3d_rlhf.data.preferences import CHOICES
from eg3d_rlhf.geometry.preview import VIEWS

#----------------------------------------------------------------------------
# GET /                         the page (label_page.html beside this file)
# GET /api/state                the session's state (labeling.LabelSession.state)
# GET /bank/<id>/<picture>.png  a finished sample's previews and RGB render; any other path is 404
# POST /api/judge               {"a": ID, "b": ID, "choice": one of CHOICES}: judge the pair being shown
# POST /api/undo                {}: take back the last judgement
# POST bodies are JSON (other sites' forms cannot post) of a stated Content-Length up to MAX_BODY bytes; any other
# body is refused (4xx with {"error"}) before anything is written, and the server goes on serving.

PAGE_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'label_page.html')
SERVED = frozenset([preview_file(v) for v in VIEWS] + [IMAGE_FILE])  # The only files of a sample folder people see.
SAMPLE_FILE = re.compile(r'/bank/([A-Za-z0-9_.-]+)/([a-z_]+\.png)')   # Matched on the raw path: nothing is decoded.
LOOPBACK = '127.0.0.1'
MAX_BODY = 4096
JUDGE_KEYS = {'a', 'b', 'choice'}
REQUEST_TIMEOUT = 30         # Seconds a connection may stay silent.


class LabelServer(http.server.ThreadingHTTPServer):
    """The page, its API and the bank's pictures; one LabelSession per server (one annotator)."""
    daemon_threads = True

    def __init__(self, address, bank, session):
        if ':' in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)
        self.bank, self.session = bank, session
        self.root = os.path.realpath(bank.root)
        self.hosts = allowed_hosts(address[0])
        with open(PAGE_FILE, 'rb') as f:
            self.page = f.read()

    def run(self):
        """Serve until Ctrl-C, then close the socket."""
        try:
            self.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            self.server_close()

    def sample_file(self, path):
        """The file a /bank/<id>/<name>.png path names, or None unless id is in the bank, name is a picture and the
        file is a regular file whose real path lies inside the bank (a symlink out of it is never followed)."""
        m = SAMPLE_FILE.fullmatch(path)
        if m is None or m.group(1) not in self.bank or m.group(2) not in SERVED:
            return None
        real = os.path.realpath(self.bank.path(m.group(1), m.group(2)))
        if os.path.commonpath([real, self.root]) != self.root or not os.path.isfile(real):
            return None
        return real


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

    def reply(self, status, body, content_type):
        self.send_response(status)
        self.send_header('Content-Type', content_type)
        self.send_header('Content-Length', str(len(body)))
        self.send_header('Cache-Control', 'no-store')
        self.send_header('X-Content-Type-Options', 'nosniff')
        self.end_headers()
        self.wfile.write(body)

    def reply_json(self, status, data):
        self.reply(status, json.dumps(data).encode('utf-8'), 'application/json')

    def not_found(self):
        self.reply_json(404, dict(error='not found'))

    def host_allowed(self):
        """Does the Host header name this server (a page on another site that rebinds its DNS name to 127.0.0.1 sends
        its own name)? A refusal is answered here."""
        if self.server.hosts is None or host_name(self.headers.get('Host', '')) in self.server.hosts:
            return True
        self.reply_json(421, dict(error='unexpected Host header; open the page by the address the server printed'))
        return False

    def do_GET(self):
        if not self.host_allowed():
            return
        path = self.path.split('?', 1)[0]
        if path == '/':
            return self.reply(200, self.server.page, 'text/html; charset=utf-8')
        if path == '/api/state':
            return self.reply_json(200, self.server.session.state())
        file = self.server.sample_file(path)
        if file is None or not os.path.isfile(file):
            return self.not_found()
        with open(file, 'rb') as f:
            self.reply(200, f.read(), 'image/png')

    def do_POST(self):
        if not self.host_allowed():
            return
        path = self.path.split('?', 1)[0]
        if path not in ('/api/judge', '/api/undo'):
            return self.not_found()
        try:
            body = self.json_body()
            state = self.undo(body) if path == '/api/undo' else self.judge(body)
        except Refused as err:
            return self.reply_json(err.status, dict(error=str(err)))
        except ValueError as err:                       # A stale page, or nothing to undo: show the truth again.
            return self.reply_json(409, dict(error=str(err), state=self.server.session.state()))
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

    def judge(self, body):
        if not isinstance(body, dict) or set(body) != JUDGE_KEYS or not all(isinstance(v, str) for v in body.values()):
            raise Refused(400, 'expected {"a": ID, "b": ID, "choice": CHOICE}, all strings')
        if body['choice'] not in CHOICES:
            raise Refused(400, f'choice must be one of {", ".join(CHOICES)}')
        return self.server.session.judge(body['a'], body['b'], body['choice'])

    def undo(self, body):
        if body != {}:
            raise Refused(400, 'an undo takes an empty JSON object, {}')
        return self.server.session.undo()


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


def allowed_hosts(bound):
    """Host header names a server bound to `bound` answers: the loopback names, and `bound` itself; None (any) when it
    listens on every address (0.0.0.0, ::), whose names this machine cannot know."""
    if bound in ('0.0.0.0', '::', ''):
        return None
    return {'localhost', '127.0.0.1', '::1', bound.lower()}

#----------------------------------------------------------------------------
