// medfoundry view: the page. Talks only to the HTTP API of docs/viewer.md; NiiVue draws the image and the labels.
"use strict";

const TOKEN = document.querySelector('meta[name="medfoundry-token"]').content;
const HEADERS = { "X-Medfoundry-Token": TOKEN };
const PALETTE = [
  [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180],
  [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128], [170, 110, 40],
];
const AXIS_OF_VIEW = { 0: "z", 1: "y", 2: "x" }; // NiiVue axial / coronal / sagittal tile -> sliced array axis
const VOXEL_AXIS = { x: 0, y: 1, z: 2 }; // position in a voxel (x, y, z)
const IN_SLICE = { z: [0, 1], y: [0, 2], x: [1, 2] }; // in-slice (u, v) coordinates of a slice along an axis

const $ = (id) => document.getElementById(id);
const viewer = {
  nv: null, info: null, tool: "navigate", object: 1, objects: [1], current: null, lastLocation: null,
  prompts: [], busy: false, // prompts: {seconds, embedded, ...} of every answered prompt (the tests read it)
};
window.viewer = viewer;

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(method, route, body) {
  const init = { method, headers: { ...HEADERS } };
  if (body !== undefined) { init.headers["Content-Type"] = "application/json"; init.body = JSON.stringify(body); }
  const response = await fetch(route, init);
  const data = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (!response.ok) throw new ApiError(response.status, data.error || `HTTP ${response.status}`);
  return data;
}

function status(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

async function guarded(what, fn) {
  if (viewer.busy) { status("busy, wait for the previous request"); return; }
  viewer.busy = true; document.body.dataset.state = "busy"; status(`${what}…`);
  try { await fn(); } catch (err) { status(`${what}: ${err.message}`, true); console.error(err); }
  finally { viewer.busy = false; document.body.dataset.state = "ready"; }
}

// ---------------------------------------------------------------------------------------------- coordinates
function toVoxel(mm) {
  const m = viewer.info.ras_to_voxel;
  return [0, 1, 2].map((r) => m[r][0] * mm[0] + m[r][1] * mm[1] + m[r][2] * mm[2] + m[r][3]);
}

function clampIndex(v, axis) {
  const n = viewer.info.shape_zyx[2 - VOXEL_AXIS[axis]];
  return Math.min(n - 1, Math.max(0, Math.round(v)));
}

// ---------------------------------------------------------------------------------------------- labels overlay
function colour(label) { return PALETTE[(label - 1) % PALETTE.length]; }

function labelColormap() {
  const maxLabel = Math.max(1, ...viewer.objects);
  const cm = { R: [0], G: [0], B: [0], A: [0], I: [0] };
  for (let i = 1; i <= maxLabel; i++) {
    const [r, g, b] = colour(i);
    cm.R.push(r); cm.G.push(g); cm.B.push(b); cm.A.push(255); cm.I.push(i);
  }
  return cm;
}

async function refreshLabels() {
  const nv = viewer.nv;
  const img = await niivue.NVImage.loadFromUrl({
    url: `/api/labels?token=${TOKEN}`, headers: HEADERS, name: "labels.nii.gz",
    opacity: Number($("opacity").value),
  });
  img.setColormapLabel(labelColormap());
  while (nv.volumes.length > 1) nv.removeVolumeByIndex(1);
  nv.addVolume(img);
  nv.setOpacity(1, Number($("opacity").value));
  await refreshStats();
}

async function refreshStats() {
  const { labels } = await api("GET", "/api/stats");
  const byLabel = Object.fromEntries(labels.map((row) => [row.label, row]));
  for (const row of labels) if (!viewer.objects.includes(row.label)) viewer.objects.push(row.label);
  viewer.objects.sort((a, b) => a - b);
  const body = $("objects").querySelector("tbody");
  body.innerHTML = "";
  for (const label of viewer.objects) {
    const row = byLabel[label] || {};
    const tr = document.createElement("tr");
    tr.dataset.label = label;
    tr.className = label === viewer.object ? "current" : "";
    const [r, g, b] = colour(label);
    const cells = [
      `<span class="swatch" style="background: rgb(${r},${g},${b})"></span>`, String(label),
      row.volume_ml === undefined ? "–" : row.volume_ml.toFixed(2),
      row.suv_max === undefined ? "–" : row.suv_max.toFixed(2),
      row.suv_mean === undefined ? "–" : row.suv_mean.toFixed(2),
    ];
    cells.forEach((html, i) => {
      const td = document.createElement("td");
      td.innerHTML = html;
      if (i >= 3) td.className = "pet";
      tr.appendChild(td);
    });
    tr.addEventListener("click", () => selectObject(label));
    body.appendChild(tr);
  }
}

function selectObject(label) {
  viewer.object = label;
  viewer.current = null;
  for (const tr of $("objects").querySelectorAll("tbody tr")) {
    tr.className = Number(tr.dataset.label) === label ? "current" : "";
  }
}

// ---------------------------------------------------------------------------------------------- prompting
async function sendPrompt() {
  const cur = viewer.current;
  const body = { object: cur.object, axis: cur.axis, index: cur.index };
  if (cur.box) body.box = cur.box;
  if (cur.points.length) { body.points = cur.points; body.point_labels = cur.labels; }
  const started = performance.now();
  const result = await api("POST", "/api/prompt", body);
  result.api_ms = Math.round(performance.now() - started);
  await refreshLabels();
  result.round_trip_ms = Math.round(performance.now() - started);
  viewer.prompts.push({ request: body, ...result });
  status(`object ${result.label}: ${result.voxels} voxels on ${result.axis}=${result.index}; model ` +
    `${(result.seconds * 1000).toFixed(0)} ms${result.embedded ? " (slice encoded)" : " (cached embedding)"}, ` +
    `box to overlay ${result.round_trip_ms} ms`);
}

function onBox(p) {
  if (viewer.tool !== "box" || p.tileIdx < 0) return;
  const axis = AXIS_OF_VIEW[p.axCorSag];
  if (!axis) { status("draw the box on a slice view", true); return; }
  const a = toVoxel(p.mmStart), b = toVoxel(p.mmEnd);
  const [u, v] = IN_SLICE[axis];
  const names = ["x", "y", "z"];
  const lo = (k) => clampIndex(Math.min(a[k], b[k]), names[k]);
  const hi = (k) => clampIndex(Math.max(a[k], b[k]), names[k]);
  viewer.current = {
    object: viewer.object, axis, index: clampIndex(a[VOXEL_AXIS[axis]], axis),
    box: [lo(u), lo(v), hi(u), hi(v)], points: [], labels: [],
  };
  guarded("segmenting", sendPrompt);
}

function onPoint() {
  const loc = viewer.lastLocation;
  if (!loc || !(viewer.tool === "positive" || viewer.tool === "negative")) return;
  const axis = AXIS_OF_VIEW[loc.axCorSag];
  if (!axis) return;
  const vox = toVoxel(loc.mm);
  const index = clampIndex(vox[VOXEL_AXIS[axis]], axis);
  const [u, v] = IN_SLICE[axis];
  const names = ["x", "y", "z"];
  const cur = viewer.current;
  if (!cur || cur.object !== viewer.object || cur.axis !== axis || cur.index !== index) {
    viewer.current = { object: viewer.object, axis, index, box: null, points: [], labels: [] };
  }
  viewer.current.points.push([clampIndex(vox[u], names[u]), clampIndex(vox[v], names[v])]);
  viewer.current.labels.push(viewer.tool === "positive" ? 1 : 0);
  guarded("segmenting", sendPrompt);
}

function currentAxialSlice() {
  if (viewer.current && viewer.current.axis === "z") return viewer.current.index;
  const loc = viewer.lastLocation;
  return loc ? clampIndex(toVoxel(loc.mm)[2], "z") : Math.floor(viewer.info.shape_zyx[0] / 2);
}

async function propagate() {
  const cur = viewer.current;
  const last = viewer.info.shape_zyx[0] - 1;
  const bound = (id, fallback) => {
    const v = Number($(id).value);
    return Number.isInteger(v) ? Math.min(last, Math.max(0, v)) : fallback;
  };
  const z0 = bound("prop-z0", 0), z1 = bound("prop-z1", last);
  let body;
  if (cur && cur.axis === "z" && cur.box && !cur.points.length && cur.object === viewer.object) {
    const [x0, y0, x1, y1] = cur.box;
    body = { object: cur.object, box: [x0, y0, z0, x1, y1, z1], start_z: cur.index };
  } else {
    body = { object: viewer.object, from_slice: currentAxialSlice(), z_range: [z0, z1] };
  }
  const result = await api("POST", "/api/propagate", body);
  viewer.propagated = result;
  await refreshLabels();
  status(`object ${result.label}: ${result.voxels} voxels on slices ${result.slices.join("–")} ` +
    `(${result.seconds.toFixed(1)} s, ${result.slices_embedded} slices encoded)`);
}

async function save(confirmed = false) {
  try {
    const result = await api("POST", "/api/save", { confirm: confirmed });
    viewer.saved = result;
    status(`saved ${result.path} (labels ${result.labels.join(", ") || "none"})`);
  } catch (err) {
    if (err.status === 409 && !confirmed && window.confirm(`${err.message}\n\nReplace it?`)) return save(true);
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------- set-up
function setTool(tool) {
  viewer.tool = tool;
  // left drag draws a box (NiiVue's callback-only drag) with the box tool, else moves the crosshair
  viewer.nv.opts.dragModePrimary = tool === "box" ? viewer.nv.dragModes.callbackOnly : 8;
}

function setLayout(name) {
  const nv = viewer.nv;
  const types = { axial: nv.sliceTypeAxial, coronal: nv.sliceTypeCoronal, sagittal: nv.sliceTypeSagittal,
    render: nv.sliceTypeRender, mpr3d: nv.sliceTypeMultiplanar };
  nv.opts.multiplanarShowRender = 1; // always show the 3D render beside the three planes
  nv.setSliceType(types[name]);
}

function setWindow(i) {
  const preset = viewer.info.windows[i];
  const vol = viewer.nv.volumes[0];
  vol.cal_min = preset.min;
  vol.cal_max = preset.max;
  viewer.nv.updateGLVolume();
}

async function main() {
  const info = await api("GET", "/api/info");
  viewer.info = info;
  if (info.modality === "PET") document.body.classList.add("pet");
  $("image-info").textContent = `${info.image || "image"} · ${info.modality} · ` +
    `${info.shape_zyx.slice().reverse().join("×")} voxels · ${info.spacing_xyz.map((s) => s.toFixed(2)).join("×")} mm` +
    (info.out ? ` · saves to ${info.out}` : " · no --out: saving is off");
  info.labels.forEach((l) => { if (!viewer.objects.includes(l)) viewer.objects.push(l); });

  const nv = new niivue.Niivue({
    backColor: [0, 0, 0, 1], show3Dcrosshair: true, dragAndDropEnabled: false, isColorbar: false,
    crosshairColor: [1, 1, 0, 0.6], crosshairWidth: 0.25, multiplanarShowRender: 1, multiplanarLayout: 2,
  });
  viewer.nv = nv;
  await nv.attachTo("gl");
  await nv.loadVolumes([{ url: `/api/volume?token=${TOKEN}`, name: "image.nii.gz", colormap: "gray" }]);
  $("prop-z0").max = $("prop-z1").max = String(info.shape_zyx[0] - 1);
  $("prop-z1").value = String(info.shape_zyx[0] - 1);
  const select = $("window");
  info.windows.forEach((w, i) => select.add(new Option(w.name, String(i))));
  setWindow(0);
  setLayout("mpr3d");
  await refreshLabels();

  nv.onDragRelease = onBox;
  nv.onLocationChange = (loc) => {
    viewer.lastLocation = loc;
    const vox = toVoxel(loc.mm).map((v) => Math.round(v));
    const value = loc.values && loc.values[0] ? loc.values[0].value : NaN;
    const label = loc.values && loc.values[1] ? loc.values[1].value : 0;
    $("location").textContent = `voxel x ${vox[0]} y ${vox[1]} z ${vox[2]}: ${Number(value).toPrecision(4)} ` +
      `${info.value_unit}${label ? ` · object ${label}` : ""}`;
  };
  $("gl").addEventListener("pointerup", (e) => { if (e.button === 0) setTimeout(onPoint, 0); });
  for (const radio of document.querySelectorAll('input[name="tool"]')) {
    radio.addEventListener("change", () => setTool(radio.value));
  }
  $("layout").addEventListener("change", (e) => setLayout(e.target.value));
  select.addEventListener("change", (e) => setWindow(Number(e.target.value)));
  $("opacity").addEventListener("input", (e) => { if (nv.volumes.length > 1) nv.setOpacity(1, Number(e.target.value)); });
  $("new-object").addEventListener("click", () => {
    const label = Math.max(0, ...viewer.objects) + 1;
    viewer.objects.push(label);
    refreshStats().then(() => selectObject(label));
  });
  $("propagate").addEventListener("click", () => guarded("propagating", propagate));
  $("erase-slice").addEventListener("click", () => guarded("erasing", async () => {
    const r = await api("POST", "/api/erase", { object: viewer.object, axis: "z", index: currentAxialSlice() });
    viewer.current = null;
    await refreshLabels();
    status(`erased ${r.removed} voxels of object ${r.label}`);
  }));
  $("erase-object").addEventListener("click", () => guarded("erasing", async () => {
    const r = await api("POST", "/api/erase", { object: viewer.object, all: true });
    viewer.current = null;
    await refreshLabels();
    status(`erased object ${r.label} (${r.removed} voxels)`);
  }));
  $("undo").addEventListener("click", () => guarded("undoing", async () => {
    const r = await api("POST", "/api/undo");
    viewer.current = null;
    await refreshLabels();
    status(`undid ${r.undone}`);
  }));
  $("save").addEventListener("click", () => guarded("saving", () => save(false)));
  selectObject(viewer.objects[0]);
  document.body.dataset.state = "ready";
  status("ready: choose the box tool and drag a box on a slice");
}

main().catch((err) => { status(`could not start: ${err.message}`, true); console.error(err); });
