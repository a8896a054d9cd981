"""The labeling page's web server: the page, its JSON API over a LabelSession, and the bank's pictures, nothing else."""

import asyncio
import concurrent.futures
import gzip
import html
import http.client
import http.cookies
import http.server
import io
import ipaddress
import json
import os
import re
import socket
import threading
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
# POST /api/switch?token=T      {}: beyond loopback, sign this browser in as T's annotator (switch_page's button)
# POST bodies are JSON (other sites' forms cannot post) of a stated Content-Length up to MAX_BODY bytes; any other
# body, or a POST whose Origin header is another site's, is refused (4xx with {"error"}) before anything is written,
# and the server goes on serving.
# Beyond loopback (--host), every request must carry an invited annotator's token (invites.py), as ?token= (the
# secret link) or the cookie the page sets from it, else 403; the annotator is the token's, never the request's, and
# a POST must also carry the page's own Origin. A link never replaces the cookie of another invited annotator: the
# browser gets a page that says who it labels as and offers the switch (a POST).
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
REQUEST_TIMEOUT = 30         # Seconds a request may take to arrive whole, and its answer to be taken.
BACKLOG = socket.SOMAXCONN   # Connections the system holds until they are accepted (5, http.server's, made crowds retry).
WORKERS = 8                  # Threads that answer whole requests; none of them ever waits on a client.
MAX_OPEN = 1024              # Connections held at once; beyond, the one whose request has been arriving longest goes.
MAX_LINE = 65536             # Longest line of a request's head, as http.server allows ...
MAX_HEADERS = 100            # ... and most header lines, as http.client does.

#----------------------------------------------------------------------------
# Connections: one event loop (asyncio) reads each request whole, head and body, within REQUEST_TIMEOUT, holding no
# thread while a client is slow (slowloris costs a few bytes, not a thread); WORKERS threads answer whole requests
# into memory; the loop writes the answer back and closes (one request per connection). Memory stays bounded by
# MAX_OPEN requests of at most MAX_LINE-long lines plus MAX_BODY bytes. shutdown() stops taking connections, lets
# the requests being answered get their answers (a judgement the round's last click made is answered) and drops
# those still arriving.


class LabelServer(http.server.HTTPServer):
    """The page, its API and the pictures. On loopback one session (one annotator, named on the command line); beyond
    it, one per invited annotator (`sessions`: a Sessions), whose tokens `invites` (invites.Invites) checks."""
    request_queue_size = BACKLOG

    def __init__(self, address, bank, session, samples=None, sessions=None, invites=None, page=PAGE_FILE,
            allow_hosts=()):
        if ':' in address[0]:
            self.address_family = socket.AF_INET6
        self.pool = concurrent.futures.ThreadPoolExecutor(WORKERS, thread_name_prefix='label-server')
        self.arriving = {}                              # Connections whose request is still arriving, oldest first.
        self.answering = set()                          # Tasks of the connections whose request is being answered.
        self.connections = 0                            # Open now, arriving or being answered.
        self._quit, self._done, self._stop = threading.Event(), threading.Event(), None
        self._done.set()
        super().__init__(address, Handler)              # Binds and listens (server_close on failure).
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

    def serve_forever(self, poll_interval=None):
        """Serve until shutdown() (socketserver's contract, on an event loop: see Connections above)."""
        self._done.clear()
        try:
            asyncio.run(self._serve())
        finally:
            self._done.set()

    def shutdown(self):
        """Stop serve_forever and wait until it has stopped."""
        self._quit.set()
        stop = self._stop
        if stop is not None:
            try:
                stop()
            except RuntimeError:                        # Its loop has closed already.
                pass
        self._done.wait()

    def server_close(self):
        super().server_close()
        self.pool.shutdown(wait=False, cancel_futures=True)

    async def _serve(self):
        loop, stop = asyncio.get_running_loop(), asyncio.Event()
        self._stop = lambda: loop.call_soon_threadsafe(stop.set)
        if self._quit.is_set():                         # shutdown() came first.
            return
        async with await asyncio.start_server(self._connection, sock=self.socket, backlog=BACKLOG, limit=MAX_LINE):
            await stop.wait()
        if self.answering:                              # Nothing new comes in; what was asked (a judgement just
            await asyncio.wait(list(self.answering), timeout=REQUEST_TIMEOUT)    # made) still gets its answer.
        for writer in list(self.arriving):              # Requests still arriving are dropped, not left hanging.
            writer.transport.abort()

    async def _connection(self, reader, writer):
        """One connection: its request read whole, answered by a worker, the answer written back within the timeout."""
        timeout = self.RequestHandlerClass.timeout
        self.connections += 1
        self.arriving[writer] = None
        if self.connections > MAX_OPEN:                        # The crowd's longest arrival goes (this one, if none is left).
            oldest = next(iter(self.arriving))
            del self.arriving[oldest]
            oldest.transport.abort()
        try:
            request = await arrival(reader, timeout)
            self.arriving.pop(writer, None)
            if request is None or writer.transport.is_closing():
                return
            self.answering.add(asyncio.current_task())
            answer = await asyncio.get_running_loop().run_in_executor(self.pool, self.answer, request,
                writer.get_extra_info('peername'))
            writer.write(answer)
            writer.close()
            await asyncio.wait_for(writer.wait_closed(), timeout)
        except (OSError, asyncio.TimeoutError):         # Gone, or not taking its answer: dropped.
            writer.transport.abort()
        finally:
            self.arriving.pop(writer, None)
            self.answering.discard(asyncio.current_task())
            self.connections -= 1
            writer.close()

    def answer(self, request, client_address):
        """The bytes a handler writes in answer to `request`, (bytes, stalled) as arrival() gathered it (in a worker)."""
        try:
            return self.RequestHandlerClass(request, client_address, self).wfile.getvalue()
        except Exception: # pylint: disable=broad-except
            self.handle_error(request, client_address)          # The traceback, as socketserver prints it.
            return b''

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


class Arrived(io.BytesIO):
    """A request's bytes as they arrived; reading past them is a TimeoutError when the client stalled mid-body."""

    def __init__(self, data, stalled):
        super().__init__(data)
        self.stalled = stalled

    def read(self, size=-1):
        data = super().read(size)
        if self.stalled and size is not None and len(data) < size:
            raise TimeoutError('timed out')
        return data


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = 'eg3d-rlhf-label'
    protocol_version = 'HTTP/1.0'                       # One request per connection: nothing waits for a next one.
    timeout = REQUEST_TIMEOUT                           # A client that stalls mid-request is dropped, not waited on.

    def setup(self):
        """Read the request LabelServer gathered whole, (data, stalled); write the answer into memory."""
        self.connection = None
        self.rfile, self.wfile = Arrived(*self.request), io.BytesIO()

    def finish(self):                                   # LabelServer sends wfile's bytes.
        pass

    def log_message(self, format, *args):               # Quiet: the terminal shows progress, not every picture.
        pass

    def reply(self, status, body, content_type, headers=()):
        self.send_response(status)
        self.send_header('Content-Type', content_type)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def end_headers(self):
        """Every response's (http.server's own errors' too): never cached, never sniffed, and no Referer sent from
        the page, whose address may hold the invite token."""
        self.send_header('Cache-Control', 'no-store')
        self.send_header('X-Content-Type-Options', 'nosniff')
        self.send_header('Referrer-Policy', 'no-referrer')
        super().end_headers()

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
        return self.link_token() or self.cookie_token()

    def link_token(self):
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query).get('token')
        return query[0] if query else None

    def cookie_token(self):
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
            return self.reply_page()
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

    def sign_in(self):
        """The Set-Cookie header (a list) that makes the request's token the browser's; none on loopback. Lax, not
        Strict: a link followed from another site (a webmail) carries the cookie, so reply_page sees who is signed in
        (every POST needs the page's own Origin anyway)."""
        token = self.token() if self.server.remote else None
        return [('Set-Cookie', f'{self.cookie_name()}={token}; HttpOnly; SameSite=Lax; Path=/')] if token else []

    def reply_page(self):
        """The page, signing the browser in as the link's annotator (sign_in); but a link of another annotator than
        the one the browser is signed in as gets switch_page instead: a browser is never switched silently."""
        link, held = self.link_token(), self.cookie_token()
        if self.server.remote and link is not None and held not in (None, link):
            invited, signed_in = (self.server.invites.name_of(t) for t in (link, held))
            if signed_in not in (None, invited):
                return self.reply(409, switch_page(signed_in, invited), 'text/html; charset=utf-8')
        self.reply(200, self.server.page, 'text/html; charset=utf-8', self.sign_in())

    def do_POST(self):
        if not self.host_allowed() or not self.origin_allowed():
            return
        session = self.annotator_session()
        if session is None:
            return
        path = self.path.split('?', 1)[0]
        actions = {'/api/undo': self.undo}
        actions.update({'/api/judge': self.judge} if hasattr(session, 'judge') else {'/api/rate': self.rate})
        if self.server.remote:
            actions['/api/switch'] = self.switch
        if path not in actions:
            return self.not_found()
        try:
            body = self.json_body()
            state = actions[path](session, body)
            if path == '/api/switch':
                return self.reply(200, json.dumps(dict(state=state)).encode('utf-8'), 'application/json', self.sign_in())
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

    def switch(self, session, body):
        if body != {}:
            raise Refused(400, 'a switch takes an empty JSON object, {}')
        return session.state()

    def undo(self, session, body):
        if body != {}:
            raise Refused(400, 'an undo takes an empty JSON object, {}')
        return session.undo()


async def arrival(reader, timeout):
    """(bytes, stalled) of the request a connection sends: its head (lines up to an empty one) and as much of the body
    as its Content-Length states (content_length; none when that refuses), within `timeout` seconds; stalled when the
    body was still coming then. None when the head does not come whole in time (the connection closes unanswered)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        head = await asyncio.wait_for(read_head(reader), timeout)
    except (asyncio.TimeoutError, ValueError, OSError):        # Slow, a line over MAX_LINE, or gone.
        return None
    if head is None:
        return None
    try:
        length = content_length(http.client.parse_headers(io.BytesIO(head.split(b'\n', 1)[1])).get_all(
            'Content-Length', []))
    except (Refused, http.client.HTTPException):
        length = 0                                      # The handler answers what is wrong with the head.
    body = bytearray()
    try:
        await asyncio.wait_for(read_body(reader, body, length), max(0, deadline - loop.time()))
    except asyncio.TimeoutError:
        return head + bytes(body), True
    except OSError:
        return None
    return head + bytes(body), False


async def read_head(reader):
    """The request line and header lines up to the empty line; None when the client stops sending before it."""
    head = bytearray()
    for _ in range(MAX_HEADERS + 2):                    # The request line, the headers, the empty line.
        line = await reader.readline()
        head += line
        if not line.endswith(b'\n'):
            return None
        if line in (b'\r\n', b'\n'):
            return bytes(head)
    return None


async def read_body(reader, body, length):
    """Add up to `length` bytes to `body` as they come, until the client stops sending."""
    while len(body) < length:
        chunk = await reader.read(length - len(body))
        if not chunk:
            return
        body += chunk


def switch_page(signed_in, invited):
    """The page a link of annotator `invited` gets in a browser signed in as `signed_in`: it says so and offers both."""
    signed_in, invited = html.escape(signed_in), html.escape(invited)
    return f'''<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Signed in as {signed_in}</title></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 3em auto">
<p>This browser labels as <b>{signed_in}</b>, but the link you opened is <b>{invited}</b>'s.</p>
<p><a id="stay" href="/">Go on as {signed_in}</a> &nbsp; <button id="switch">Label as {invited} instead</button></p>
<p id="error"></p>
<script>
document.getElementById("switch").onclick = async () => {{
  const r = await fetch("/api/switch" + location.search, {{method: "POST", headers: {{"Content-Type": "application/json"}},
    body: "{{}}"}});
  if (r.ok) location.replace("/");
  else document.getElementById("error").textContent = (await r.json()).error;
}};
</script>
</body></html>
'''.encode('utf-8')


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
