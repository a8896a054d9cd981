// The labeling page's 3D view: a bank sample's mesh file (eg3d_rlhf/data/mesh_file.py) drawn with WebGL, shaded as
// the stills are; drag to orbit, wheel to zoom, one camera for every side. Without WebGL, or while a mesh loads or
// when it cannot be read, a side shows its stills: nothing here stands between the annotator and the keyboard.
"use strict";
const MeshViewer = (() => {
  const LIGHT = normalise([0.3, 0.6, 1.0]);        // The stills' light (geometry/preview.py) in view space.
  const AMBIENT = 0.25;
  const QUANT = 65535, SMALL_INDEX = 65536, HEADER = 40, MAGIC = 0x4d443345;   // "E3DM", little endian.
  const camera = { yaw: 0, pitch: 0, zoom: 1 };    // Degrees; yaw 0 looks at the face (from +z), as the front still.
  const views = [];

  const VERTEX = `attribute vec3 position; attribute vec3 normal;
    uniform mat3 rotation; uniform vec3 centre; uniform vec3 scale; varying vec3 n;
    void main() { n = rotation * normal; gl_Position = vec4((rotation * (position - centre)) * scale, 1.0); }`;
  const FRAGMENT = `precision mediump float; varying vec3 n; uniform vec3 light;
    void main() { float l = length(n); vec3 m = l > 0.0 ? n / l : vec3(0.0, 0.0, 1.0); if (!gl_FrontFacing) m = -m;
      gl_FragColor = vec4(vec3(${AMBIENT} + ${1 - AMBIENT} * max(dot(m, light), 0.0)), 1.0); }`;

  function normalise(v) { const l = Math.hypot(...v) || 1; return v.map((x) => x / l); }
  function cross(a, b) { return [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]; }

  // (positions Float32Array [3V], indices Uint16Array|Uint32Array [3F], lo, hi) of a file's bytes; throws on
  // anything else, as mesh_file.decode does.
  function decode(buffer) {
    const d = new DataView(buffer);
    if (buffer.byteLength < HEADER || d.getUint32(0, true) !== MAGIC || d.getUint32(4, true) !== 1) throw new Error("not a mesh file");
    const nv = d.getUint32(8, true), nf = d.getUint32(12, true);
    const lo = [0, 1, 2].map((i) => d.getFloat32(16 + 4 * i, true)), hi = [0, 1, 2].map((i) => d.getFloat32(28 + 4 * i, true));
    if (![...lo, ...hi].every(Number.isFinite) || [0, 1, 2].some((i) => hi[i] < lo[i])) throw new Error("bad box");
    const wide = nv > SMALL_INDEX, start = HEADER + 6 * nv + ((4 - (6 * nv) % 4) % 4);
    if (buffer.byteLength !== start + 3 * nf * (wide ? 4 : 2)) throw new Error("size does not match the header");
    const planes = new Uint16Array(buffer, HEADER, 3 * nv), positions = new Float32Array(3 * nv);
    for (let axis = 0; axis < 3; axis++) {
      const span = hi[axis] > lo[axis] ? hi[axis] - lo[axis] : 1;
      let q = 0;
      for (let i = 0; i < nv; i++) {
        q = (q + planes[axis * nv + i]) & 0xffff;
        positions[3 * i + axis] = lo[axis] + q / QUANT * span;
      }
    }
    const indices = wide ? new Uint32Array(buffer, start, 3 * nf).slice() : new Uint16Array(buffer, start, 3 * nf).slice();
    for (let i = 0, k = 0; i < indices.length; i++) {
      k = wide ? (k + indices[i]) >>> 0 : (k + indices[i]) & 0xffff;
      if (k >= nv) throw new Error("a triangle names a vertex that does not exist");
      indices[i] = k;
    }
    return { positions, indices, lo, hi, wide };
  }

  function vertexNormals(positions, indices) {       // Area-weighted: the sum of the faces' cross products.
    const normals = new Float32Array(positions.length), p = (i, a) => positions[3 * i + a];
    for (let t = 0; t < indices.length; t += 3) {
      const [a, b, c] = [indices[t], indices[t + 1], indices[t + 2]];
      const n = cross([0, 1, 2].map((x) => p(b, x) - p(a, x)), [0, 1, 2].map((x) => p(c, x) - p(a, x)));
      for (const v of [a, b, c]) for (let x = 0; x < 3; x++) normals[3 * v + x] += n[x];
    }
    for (let v = 0; v < normals.length; v += 3) {     // Unit length here: tiny triangles underflow a GPU's mediump.
      const l = Math.hypot(normals[v], normals[v + 1], normals[v + 2]) || 1;
      for (let x = 0; x < 3; x++) normals[v + x] /= l;
    }
    return normals;
  }

  function program(gl) {
    const p = gl.createProgram();
    for (const [type, source] of [[gl.VERTEX_SHADER, VERTEX], [gl.FRAGMENT_SHADER, FRAGMENT]]) {
      const s = gl.createShader(type);
      gl.shaderSource(s, source);
      gl.compileShader(s);
      gl.attachShader(p, s);
    }
    gl.linkProgram(p);
    if (!gl.getProgramParameter(p, gl.LINK_STATUS)) throw new Error(gl.getProgramInfoLog(p));
    return p;
  }

  // One side: a canvas placed before the side's stills; the side gets class "view3d-on" while a mesh is drawn.
  function View(side) {
    this.side = side;
    this.canvas = document.createElement("canvas");
    this.canvas.className = "view3d";
    side.insertBefore(this.canvas, side.querySelector(".views"));
    const gl = this.canvas.getContext("webgl", { preserveDrawingBuffer: true, antialias: false });   // null without WebGL.
    this.gl = gl;
    this.request = 0;
    this.mesh = null;
    if (!this.gl) return;
    this.program = program(gl);
    this.canvas.addEventListener("webglcontextlost", () => { this.gl = null; this.off(); });
    listen(this.canvas);
  }

  View.prototype.off = function () { this.mesh = null; this.side.classList.remove("view3d-on"); };

  View.prototype.show = async function (url) {
    if (url === this.url && this.mesh) return;       // The same sample again (a refused judgement): keep the view.
    const request = ++this.request;
    this.url = url;
    this.off();                                     // Until the new mesh is drawn, the new stills show.
    if (!this.gl) return;
    try {
      const response = await fetch(url);
      if (!response.ok) throw new Error(`${url}: ${response.status}`);
      const buffer = await response.arrayBuffer();
      if (request !== this.request || !this.gl) return;   // The page moved on to another pair meanwhile.
      this.load(decode(buffer));
      this.side.classList.add("view3d-on");
      this.draw();
    } catch (err) {
      if (request === this.request) this.off();
      console.warn(`3D view unavailable, showing the stills: ${err.message}`);
    }
  };

  View.prototype.load = function (m) {
    const gl = this.gl;
    if (m.wide && !gl.getExtension("OES_element_index_uint")) throw new Error("32-bit indices unsupported");
    if (this.buffers) this.buffers.forEach((b) => gl.deleteBuffer(b));
    this.buffers = [m.positions, vertexNormals(m.positions, m.indices), m.indices].map((data, i) => {
      const b = gl.createBuffer(), target = i < 2 ? gl.ARRAY_BUFFER : gl.ELEMENT_ARRAY_BUFFER;
      gl.bindBuffer(target, b);
      gl.bufferData(target, data, gl.STATIC_DRAW);
      return b;
    });
    const centre = m.lo.map((l, i) => (l + m.hi[i]) / 2), size = m.lo.map((l, i) => m.hi[i] - l);
    this.mesh = { count: m.indices.length, type: m.wide ? gl.UNSIGNED_INT : gl.UNSIGNED_SHORT, centre,
                  frame: Math.max(...size) / 2, radius: Math.hypot(...size) / 2 || 1 };
  };

  View.prototype.draw = function () {
    const gl = this.gl, m = this.mesh;
    if (!gl || !m) return;
    const c = this.canvas, ratio = window.devicePixelRatio || 1;
    const width = Math.max(1, Math.round(c.clientWidth * ratio)), height = Math.max(1, Math.round(c.clientHeight * ratio));
    if (c.width !== width || c.height !== height) { c.width = width; c.height = height; }
    gl.viewport(0, 0, width, height);
    gl.clearColor(1, 1, 1, 1);                      // The stills' background.
    gl.clear(gl.COLOR_BUFFER_BIT | gl.DEPTH_BUFFER_BIT);
    gl.enable(gl.DEPTH_TEST);
    gl.useProgram(this.program);
    const yaw = camera.yaw * Math.PI / 180, pitch = camera.pitch * Math.PI / 180;
    const eye = [Math.sin(yaw) * Math.cos(pitch), Math.sin(pitch), Math.cos(yaw) * Math.cos(pitch)];
    const right = normalise(cross(eye.map((x) => -x), [0, 1, 0])), up = cross(right, eye.map((x) => -x));
    const rotation = [right[0], up[0], eye[0], right[1], up[1], eye[1], right[2], up[2], eye[2]];   // Column major.
    const half = m.frame / camera.zoom;              // Orthographic, framed as the stills at zoom 1.
    const uniform = (name) => gl.getUniformLocation(this.program, name);
    gl.uniformMatrix3fv(uniform("rotation"), false, rotation);
    gl.uniform3fv(uniform("centre"), m.centre);
    gl.uniform3fv(uniform("scale"), [height / width / half, 1 / half, -1 / m.radius]);
    gl.uniform3fv(uniform("light"), LIGHT);
    this.buffers.slice(0, 2).forEach((b, i) => {
      const at = gl.getAttribLocation(this.program, i ? "normal" : "position");
      gl.bindBuffer(gl.ARRAY_BUFFER, b);
      gl.enableVertexAttribArray(at);
      gl.vertexAttribPointer(at, 3, gl.FLOAT, false, 0, 0);
    });
    gl.bindBuffer(gl.ELEMENT_ARRAY_BUFFER, this.buffers[2]);
    gl.drawElements(gl.TRIANGLES, m.count, m.type, 0);
  };

  function drawAll() { views.forEach((v) => v.draw()); }

  // Drag orbits and the wheel zooms every view at once; a drag is not a click (a click on a side shows its RGB).
  function listen(canvas) {
    let last = null, moved = 0;
    canvas.addEventListener("pointerdown", (e) => {
      last = [e.clientX, e.clientY]; moved = 0;
      canvas.setPointerCapture(e.pointerId);
    });
    canvas.addEventListener("pointermove", (e) => {
      if (!last) return;
      const dx = e.clientX - last[0], dy = e.clientY - last[1];
      last = [e.clientX, e.clientY];
      moved += Math.abs(dx) + Math.abs(dy);
      camera.yaw -= dx * 0.5;
      camera.pitch = Math.max(-89, Math.min(89, camera.pitch + dy * 0.5));
      drawAll();
    });
    const end = () => { last = null; };
    canvas.addEventListener("pointerup", end);
    canvas.addEventListener("pointercancel", end);
    canvas.addEventListener("click", (e) => { if (moved > 3) e.stopPropagation(); }, true);
    canvas.addEventListener("wheel", (e) => {
      e.preventDefault();
      camera.zoom = Math.max(0.5, Math.min(8, camera.zoom * Math.exp(-e.deltaY * 0.001)));
      drawAll();
    }, { passive: false });
  }

  window.addEventListener("resize", drawAll);

  return {
    camera, decode,
    // Show the mesh at `url` on a side (a .side element holding .views); made on first use.
    show(side, url) {
      let view = views.find((v) => v.side === side);
      if (!view) views.push(view = new View(side));
      return view.show(url);
    },
  };
})();
