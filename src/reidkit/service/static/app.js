// reidkit search page: plain JavaScript, no dependencies. Talks to the service's API (same origin).
//
// Views (the URL says which, with the query and the filters, so a search can be shared and Back works):
//   ?sighting=ID | ?track=N | ?sightings=ID,ID,...  plus top, review, floor, since, until, threshold, fuse,
//   rerank, camera (repeated): a search; ?view=browse&camera=C&since=&until=&offset=: a camera's sightings by
//   time; ?view=albums: the gallery grouped by person. Uploaded pictures stay in the browser (?q=pictures).
"use strict";

const TOKEN_KEY = "reidkit-token";
const MARKS_KEY = "reidkit-marks";
const BROWSE_LIMIT = 60;
const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];
const state = {
  files: [], blobs: [], busy: false, overviewTimer: null, overview: null,
  query: null, // {kind: "pictures" | "sighting" | "track" | "sightings", ids: [...], label}
  marks: new Map(), // detection id -> "yes" | "no"
  cache: new Map(), // URL query -> {html, what}: Back shows a search again without running it
  items: [], index: -1, zoom: 1, albums: null, browseKey: null,
};

class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (v !== null && v !== undefined) e.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

function plural(n, word, many) {
  return n.toLocaleString() + " " + (n === 1 ? word : many || word + "s");
}

const narrow = () => window.matchMedia("(max-width: 760px)").matches;

// -- talking to the service ---------------------------------------------------------------------------
function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  if (token()) headers.set("Authorization", "Bearer " + token());
  let response;
  try {
    response = await fetch(path, { ...options, headers });
  } catch (err) {
    throw new ApiError(0, "The service cannot be reached (" + err.message + ").");
  }
  if (!response.ok) {
    let detail = response.statusText || "error " + response.status;
    try {
      const body = await response.json();
      if (typeof body.detail === "string") detail = body.detail;
      else if (Array.isArray(body.detail)) detail = body.detail.map((d) => (d.loc || []).slice(1).join(".") + ": " + d.msg).join("; ");
    } catch (_) { /* not JSON */ }
    if (response.status === 401) askToken(token() ? "That token was refused." : "This service needs a token.");
    throw new ApiError(response.status, detail);
  }
  return response;
}

// Pictures from the service: with a token they are fetched with the header and shown from blob: URLs.
function releaseBlobs() {
  for (const u of state.blobs) URL.revokeObjectURL(u);
  state.blobs = [];
}

async function showPicture(img, url) {
  if (!token()) {
    img.src = url;
    return;
  }
  try {
    const r = await api(url);
    const u = URL.createObjectURL(await r.blob());
    state.blobs.push(u);
    img.src = u;
  } catch (_) {
    img.alt = "picture not available";
  }
}

function hydrate(root) {
  for (const img of root.querySelectorAll("img[data-src]")) {
    const url = img.dataset.src;
    img.removeAttribute("data-src");
    showPicture(img, url);
  }
}

function askToken(message) {
  const form = $("#token-form");
  form.hidden = false;
  $("#token-msg").textContent = message || "";
  $("#token-input").focus();
}

function setStatus(kind, text, box = $("#status")) {
  box.replaceChildren();
  if (!kind) return;
  const div = el("div", { class: "status " + kind });
  if (kind === "loading") div.append(el("span", { class: "spinner", "aria-hidden": "true" }));
  div.append(text);
  box.append(div);
}

// -- the URL: view, query and filters ------------------------------------------------------------------
const FILTERS = [["top", "#opt-top"], ["review", "#opt-review"], ["floor", "#opt-floor"], ["since", "#opt-since"], ["until", "#opt-until"], ["threshold", "#opt-threshold"]];

function filtersToParams(params) {
  for (const [name, sel] of FILTERS) {
    const v = $(sel).value.trim();
    if (v && v !== $(sel).defaultValue) params.set(name, v);
  }
  if ($("#opt-fuse").value !== "mean") params.set("fuse", $("#opt-fuse").value);
  if (!$("#opt-rerank").checked) params.set("rerank", "0");
  for (const c of $$("#opt-cameras input:checked")) params.append("camera", c.value);
}

function paramsToFilters(params) {
  for (const [name, sel] of FILTERS) $(sel).value = params.get(name) ?? $(sel).defaultValue;
  $("#opt-fuse").value = params.get("fuse") || "mean";
  $("#opt-rerank").checked = params.get("rerank") !== "0";
  state.wantCameras = new Set(params.getAll("camera"));
  for (const c of $$("#opt-cameras input")) c.checked = state.wantCameras.has(c.value);
  if (params.has("camera") || FILTERS.some(([n]) => params.has(n)) || params.has("fuse") || params.has("rerank")) $("#options").open = true;
}

function queryToParams(params, q) {
  if (!q) return;
  if (q.kind === "pictures") params.set("q", "pictures");
  else if (q.kind === "sightings") params.set("sightings", q.ids.join(","));
  else params.set(q.kind, String(q.ids[0]));
}

function queryFromParams(params) {
  const ids = (s) => s.split(",").map((x) => x.trim()).filter((x) => /^\d+$/.test(x));
  if (params.get("track") && /^\d+$/.test(params.get("track"))) return { kind: "track", ids: [params.get("track")] };
  if (params.get("sighting") && /^\d+$/.test(params.get("sighting"))) return { kind: "sighting", ids: [params.get("sighting")] };
  if (params.get("sightings") && ids(params.get("sightings")).length) return { kind: "sightings", ids: ids(params.get("sightings")) };
  if (params.get("q") === "pictures") return { kind: "pictures", ids: [] };
  return null;
}

function describe(q) {
  if (q.kind === "pictures") return state.files.length === 1 ? state.files[0].name : plural(state.files.length, "picture");
  if (q.kind === "track") return "track " + q.ids[0];
  if (q.kind === "sighting") return "sighting " + q.ids[0];
  return plural(q.ids.length, "sighting") + " (" + q.ids.join(", ") + ")";
}

function go(params, push) {
  const search = params.toString();
  const url = search ? "?" + search : location.pathname;
  if (push && url !== (location.search || location.pathname)) history.pushState(null, "", url);
  else history.replaceState(null, "", url);
}

function applyUrl() {
  const params = new URLSearchParams(location.search);
  const view = ["browse", "albums"].includes(params.get("view")) ? params.get("view") : "search";
  showView(view);
  if (view === "search") paramsToFilters(params); // the other views' parameters (a browsed camera) are their own
  if (view === "browse") loadBrowse(params);
  else if (view === "albums") loadAlbums();
  else {
    const q = queryFromParams(params);
    if (q) runQuery(q, false);
    else showHello();
  }
}

// Bring the main column into sight (a phone shows it below the search panel).
function toMain() {
  const top = $("#main").getBoundingClientRect().top;
  if (narrow() || top < 0) $("#main").scrollIntoView({ block: "start" });
}

function showView(view) {
  state.view = view;
  $("#view-search").hidden = view !== "search";
  $("#view-browse").hidden = view !== "browse";
  $("#view-albums").hidden = view !== "albums";
  for (const t of $$(".tab")) {
    if (t.dataset.view === view) t.setAttribute("aria-current", "page");
    else t.removeAttribute("aria-current");
  }
  closeViewer();
}

// -- gallery overview --------------------------------------------------------------------------------
function stat(value, label) {
  return el("div", { class: "stat" }, el("b", { text: String(value) }), el("span", { text: label }));
}

function sightingTile(s) {
  const img = el("img", { alt: s.camera + " " + s.time_text, "data-src": s.crop_url });
  const tile = el("button", { type: "button", class: "sight", title: "search from sighting " + s.id + " (" + s.camera + ", " + s.time_text + ")" }, img, el("span", { text: s.camera }));
  tile.addEventListener("click", () => runQuery({ kind: "sighting", ids: [String(s.id)] }, true));
  return tile;
}

async function loadOverview() {
  const body = $("#overview-body");
  let g;
  try {
    g = await (await api("gallery")).json();
  } catch (err) {
    body.replaceChildren(el("p", { class: err.status === 503 ? "none" : "status error", text: err.status === 503 ? err.message + " This page picks it up without a restart." : "Gallery: " + err.message }));
    $("#gallery-name").textContent = "";
    updateSearchButton(false);
    return;
  }
  state.overview = g;
  $("#gallery-name").textContent = "gallery “" + g.gallery + "”" + (g.model ? " · model " + g.model : "");
  if (g.totals.sightings === 0) {
    body.replaceChildren(el("p", { class: "none", text: "The gallery is empty: add footage or photos with reidkit ingest; new sightings show up here." }));
    updateSearchButton(false);
    return;
  }
  const nodes = [];
  nodes.push(el("div", { class: "stats" }, stat(g.totals.sightings.toLocaleString(), "sightings"), stat(g.totals.tracks.toLocaleString(), "tracks"), stat(g.totals.cameras, "cameras"), stat(g.totals.sources, "sources")));
  const clocks = el("ul", { class: "clocks" });
  for (const c of g.clocks) {
    const span = c.start_text === c.end_text ? c.start_text : c.start_text + " – " + c.end_text;
    const what = c.clock === "date" ? "dates (UTC): " + span : "offsets into the video or folder, no date: " + span;
    clocks.append(el("li", { text: what + " · " + c.cameras.join(", ") }));
  }
  if (g.clocks.some((c) => c.clock === "offset")) clocks.append(el("li", { text: "Offsets are times into each video: give reidkit ingest --start-time to date them." }));
  nodes.push(clocks);
  for (const w of g.warnings || []) nodes.push(el("p", { class: "warn", text: w }));
  if (g.searchable < g.totals.sightings) nodes.push(el("p", { class: "meta", text: (g.totals.sightings - g.searchable).toLocaleString() + " new sightings are being added to the search index" }));
  const times = {};
  for (const s of g.sources) if (s.times) (times[s.camera] = times[s.camera] || new Set()).add(s.times);
  const table = el("table", { class: "cams" });
  table.append(el("thead", {}, el("tr", {}, el("th", { text: "camera" }), el("th", { text: "sightings" }), el("th", { text: "tracks" }))));
  const tbody = el("tbody");
  for (const c of g.cameras) {
    const link = el("a", { href: "?view=browse&camera=" + encodeURIComponent(c.camera), title: "browse " + c.camera + "'s sightings by time", text: c.camera });
    link.addEventListener("click", (e) => { e.preventDefault(); openBrowse(c.camera); });
    const how = [...(times[c.camera] || [])].join("; ");
    const span = c.first_text === c.last_text ? c.first_text : c.first_text + " – " + c.last_text;
    tbody.append(el("tr", { class: "cam" }, el("td", {}, link), el("td", { class: "n", text: c.sightings.toLocaleString() }), el("td", { class: "n", text: c.tracks.toLocaleString() })));
    tbody.append(el("tr", { class: "when" }, el("td", { colspan: "3", class: "meta", text: span + (how ? " · " + how : "") })));
  }
  table.append(tbody);
  nodes.push(el("p", { class: "meta", text: "Click a camera to browse its sightings by time." }), table);
  if (g.recent.length) {
    nodes.push(el("h3", { text: "Recent sightings (click one to search from it)" }));
    const grid = el("div", { class: "recent" });
    for (const s of g.recent) grid.append(sightingTile(s));
    nodes.push(grid);
  }
  body.replaceChildren(...nodes);
  hydrate(body);
  fillCameras(g.cameras.map((c) => c.camera));
  updateSearchButton(true);
}

function fillCameras(cameras) {
  const box = $("#opt-cameras");
  const ticked = new Set([...$$("input:checked", box)].map((i) => i.value));
  for (const c of state.wantCameras || []) ticked.add(c);
  state.wantCameras = null;
  const have = $$("input", box).map((i) => i.value);
  if (have.join("\n") !== cameras.join("\n")) {
    box.replaceChildren(el("legend", { text: "Cameras (none ticked: all)" }));
    for (const c of cameras) box.append(el("label", {}, el("input", { type: "checkbox", value: c }), " " + c));
  }
  for (const i of $$("input", box)) i.checked = ticked.has(i.value);
  const select = $("#browse-camera");
  if ([...select.options].map((o) => o.value).join("\n") !== cameras.join("\n")) {
    const want = select.dataset.want || select.value;
    select.replaceChildren(...cameras.map((c) => el("option", { value: c, text: c })));
    if (cameras.includes(want)) select.value = want;
  }
}

// -- the query -------------------------------------------------------------------------------------
let galleryReady = false;
function updateSearchButton(ready) {
  if (ready !== undefined) galleryReady = ready;
  $("#search-btn").disabled = state.busy || !galleryReady || state.files.length === 0;
}

function setFiles(files) {
  state.files = [...files];
  const box = $("#query-thumbs");
  box.replaceChildren();
  for (const f of state.files) {
    const u = URL.createObjectURL(f);
    const img = el("img", { src: u, alt: "query picture " + f.name });
    img.addEventListener("error", () => img.replaceWith(el("span", { class: "bad", text: "not a picture" })));
    box.append(el("figure", {}, img, el("figcaption", { text: f.name })));
  }
  updateSearchButton();
}

function showQueryThumbs(q) {
  const box = $("#query-thumbs");
  if (q.kind === "pictures") return;
  state.files = [];
  $("#file-input").value = "";
  if (q.kind === "track") {
    box.replaceChildren(el("figure", {}, el("span", { class: "bad", text: "track " + q.ids[0] }), el("figcaption", { text: "track " + q.ids[0] })));
  } else {
    box.replaceChildren(...q.ids.slice(0, 8).map((id) => el("figure", {}, el("img", { alt: "sighting " + id, "data-src": "crops/" + id }), el("figcaption", { text: "sighting " + id }))));
    if (q.ids.length > 8) box.append(el("figure", {}, el("figcaption", { text: "+ " + (q.ids.length - 8) + " more" })));
    hydrate(box);
  }
  updateSearchButton();
}

function searchForm(q) {
  const form = new FormData();
  if (q.kind === "pictures") for (const f of state.files) form.append("image", f, f.name);
  else if (q.kind === "sightings") for (const id of q.ids) form.append("sightings", id);
  else form.append(q.kind, q.ids[0]);
  const v = (id) => $(id).value.trim();
  if (v("#opt-top")) form.append("top", v("#opt-top"));
  if (v("#opt-review")) form.append("review", v("#opt-review"));
  if (v("#opt-floor")) form.append("review_floor", v("#opt-floor"));
  if (v("#opt-since")) form.append("since", v("#opt-since"));
  if (v("#opt-until")) form.append("until", v("#opt-until"));
  if (v("#opt-threshold")) form.append("threshold", v("#opt-threshold"));
  form.append("fuse", $("#opt-fuse").value);
  form.append("rerank", $("#opt-rerank").checked ? "true" : "false");
  for (const c of $$("#opt-cameras input:checked")) form.append("camera", c.value);
  return form;
}

// Run a search for q (from the page: push a history entry; from the URL: do not).
async function runQuery(q, push) {
  if (q.kind === "pictures" && !state.files.length) {
    showView("search");
    setStatus("empty", "The pictures of that search stay in the browser that picked them: drop them again to search.");
    return;
  }
  const params = new URLSearchParams();
  queryToParams(params, q);
  filtersToParams(params);
  if (push !== null) go(params, push);
  if (state.view !== "search") showView("search");
  state.query = q;
  showQueryThumbs(q);
  const what = describe(q);
  document.title = "reidkit: " + what;
  const key = q.kind === "pictures" ? params.toString() + "|" + state.files.map((f) => f.name + f.size).join("/") : params.toString();
  const cached = state.cache.get(key);
  if (cached) {
    showResults(cached.html, cached.what);
    return;
  }
  state.busy = true;
  updateSearchButton();
  setStatus("loading", "Searching the gallery for " + what + "…");
  if (push) toMain(); // the status line in sight: where the answer, or the error, appears
  try {
    const r = await api("search/html", { method: "POST", body: searchForm(q) });
    const html = await r.text();
    state.cache.set(key, { html, what });
    if (state.cache.size > 12) state.cache.delete(state.cache.keys().next().value);
    if (state.query === q) showResults(html, what);
  } catch (err) {
    setStatus("error", "Search failed: " + err.message);
    releaseBlobs();
    $("#toolbar").hidden = true;
    $("#results").replaceChildren(el("p", { class: "none", text: err.status === 401 ? "Enter the token above, then search again." : "No results: fix the query and search again." }));
  } finally {
    state.busy = false;
    updateSearchButton();
  }
}

function showHello() {
  state.query = null;
  document.title = "reidkit search";
  setStatus(null);
  $("#toolbar").hidden = true;
}

// -- results ---------------------------------------------------------------------------------------
function showResults(fragment, what) {
  closeViewer();
  const tpl = document.createElement("template");
  tpl.innerHTML = fragment; // inert: nothing loads until the pictures are handed over below
  for (const img of tpl.content.querySelectorAll("img[src]")) {
    img.dataset.src = img.getAttribute("src");
    img.removeAttribute("src");
  }
  const results = $("#results");
  results.replaceChildren(tpl.content);
  const root = $(".results", results);
  hydrate(results);
  root?.classList.toggle("hide-rejected", $("#hide-rejected").checked);
  const n = Number(root?.dataset.appearances || 0);
  const cams = Number(root?.dataset.cameras || 0);
  const near = Number(root?.dataset.near || 0);
  const q = state.query;
  if (q && q.kind !== "pictures") {
    for (const id of q.ids) $(`.appearance[data-detection="${CSS.escape(id)}"]`, results)?.classList.add("query-self");
  }
  const floor = root?.dataset.reviewFloor ? " (none below similarity " + root.dataset.reviewFloor + ")" : "";
  if (n === 0) {
    setStatus("empty", "Nothing matched " + what + ": no appearance passed the match rule." + (near ? " The " + plural(near, "closest candidate") + " are listed below for review" + floor + "." : ""));
  } else {
    setStatus("ok", plural(n, "appearance") + " on " + plural(cams, "camera") + " for " + what + (near ? "; " + near + " more for review" + floor : "") + ".");
  }
  $("#toolbar").hidden = false;
  for (const section of $$("#appearances section.camera", results)) { // a camera takes the room its hits need
    const n = $$(".appearance", section).length;
    const one = narrow() && n === 1; // on a phone, two cameras of one hit each share a row
    section.style.flex = one ? "1 1 40%" : narrow() ? "1 1 100%" : "0 1 " + n * 208 + "px";
    $(".cards", section).style.gridTemplateColumns = one ? "minmax(0,1fr)" : "";
  }
  applyMarks();
  if (narrow()) $("#main").scrollIntoView({ block: "start" });
}

function cardsOf(root = $("#results")) {
  return $$(".appearance", root).filter((c) => c.offsetParent !== null || !c.classList.contains("rejected"));
}

// -- confirm / reject, and search again from the confirmed ------------------------------------------------
function loadMarks() {
  try {
    state.marks = new Map(JSON.parse(sessionStorage.getItem(MARKS_KEY) || "[]"));
  } catch (_) {
    state.marks = new Map();
  }
}

function mark(id, how) {
  id = String(id);
  if (state.marks.get(id) === how) state.marks.delete(id);
  else state.marks.set(id, how);
  sessionStorage.setItem(MARKS_KEY, JSON.stringify([...state.marks]));
  applyMarks();
  if ($("#viewer").open) renderViewer();
}

function applyMarks() {
  for (const node of $$("[data-detection].appearance, .tile[data-detection]")) {
    const m = state.marks.get(node.dataset.detection);
    node.classList.toggle("confirmed", m === "yes");
    node.classList.toggle("rejected", m === "no");
    for (const b of $$("button.confirm", node)) b.setAttribute("aria-pressed", String(m === "yes"));
    for (const b of $$("button.reject", node)) b.setAttribute("aria-pressed", String(m === "no"));
  }
  const yes = [...state.marks].filter(([, m]) => m === "yes").map(([id]) => id);
  const no = [...state.marks].filter(([, m]) => m === "no").length;
  $("#marks").textContent = yes.length || no ? plural(yes.length, "confirmed", "confirmed") + ", " + plural(no, "rejected", "rejected") : "";
  $("#marks-hint").hidden = Boolean(yes.length || no);
  const again = $("#again-btn");
  again.hidden = yes.length === 0;
  again.textContent = "Search again from " + plural(confirmedQuery().ids.length, "sighting");
}

function confirmedQuery() {
  const ids = [...state.marks].filter(([, m]) => m === "yes").map(([id]) => id);
  const q = state.query;
  const own = q && (q.kind === "sighting" || q.kind === "sightings") ? q.ids : [];
  return { kind: "sightings", ids: [...new Set([...own, ...ids])] };
}

function searchAgain() {
  const q = confirmedQuery();
  if (q.ids.length === 1) runQuery({ kind: "sighting", ids: q.ids }, true);
  else if (q.ids.length) runQuery(q, true);
}

async function downloadReport() {
  if (!state.query) return;
  const btn = $("#report-btn");
  btn.disabled = true;
  const old = btn.textContent;
  btn.textContent = "Preparing the report…";
  try {
    const r = await api("search/report", { method: "POST", body: searchForm(state.query) });
    const blob = await r.blob();
    const name = (/filename="([^"]+)"/.exec(r.headers.get("content-disposition") || "") || [])[1] || "reidkit-search.html";
    const a = el("a", { href: URL.createObjectURL(blob), download: name });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  } catch (err) {
    setStatus("error", "The report could not be made: " + err.message);
  } finally {
    btn.disabled = false;
    btn.textContent = old;
  }
}

async function copyLink() {
  try {
    await navigator.clipboard.writeText(location.href);
    $("#share-btn").textContent = "Link copied";
  } catch (_) {
    setStatus("ok", "This search's address: " + location.href);
  }
  setTimeout(() => { $("#share-btn").textContent = "Copy link"; }, 2000);
}

// -- the viewer: the selected hit's frame beside it, zoom, previous / next ---------------------------------
function openViewer(items, index) {
  state.items = items;
  state.index = index;
  state.zoom = 1;
  const dialog = $("#viewer");
  if (!dialog.open) dialog.show();
  $("#layout").classList.add("viewing");
  renderViewer();
  if (!narrow()) dialog.scrollTop = 0;
}

function closeViewer() {
  const dialog = $("#viewer");
  if (dialog.open) dialog.close();
  $("#layout").classList.remove("viewing");
  for (const s of $$(".selected")) s.classList.remove("selected");
  state.items = [];
  state.index = -1;
}

function step(delta) {
  if (!state.items.length) return;
  state.index = (state.index + delta + state.items.length) % state.items.length;
  state.zoom = 1;
  renderViewer();
}

function infoOf(item) {
  const info = $(".info", item);
  if (info) return info.cloneNode(true);
  const d = item.dataset;
  const box = el("div", { class: "info" });
  const line = (k, v) => { if (v) box.append(el("b", { text: k }), " " + v, el("br")); };
  line("camera", d.camera);
  line("time", d.time);
  line("track", d.track ? d.track + (d.crops ? " (" + d.crops + ")" : "") : "—");
  line("source", d.source);
  line("detection", d.detection);
  return box;
}

function renderViewer() {
  const item = state.items[state.index];
  if (!item) return;
  for (const s of $$(".selected")) s.classList.remove("selected");
  item.classList.add("selected");
  item.scrollIntoView({ block: "nearest" });
  const d = item.dataset;
  const id = d.detection;
  $("#viewer-title").textContent = (d.camera || item.closest("section.camera")?.dataset.camera || "") + " · detection " + id;
  $("#viewer-pos").textContent = state.items.length > 1 ? state.index + 1 + " / " + state.items.length : "";
  $("#viewer-prev").disabled = $("#viewer-next").disabled = state.items.length < 2;
  const body = $("#viewer-body");
  const m = state.marks.get(id);
  const actions = el("div", { class: "viewer-actions" },
    el("button", { type: "button", class: "confirm", "data-detection": id, "aria-pressed": String(m === "yes"), text: "✓ yes, this is the person" }),
    el("button", { type: "button", class: "reject", "data-detection": id, "aria-pressed": String(m === "no"), text: "✗ no" }),
    el("button", { type: "button", class: "search-from", "data-detection": id, text: "search from this" }));
  const crop = el("img", { alt: "crop of detection " + id, "data-src": "crops/" + id });
  const hit = el("div", { class: "viewer-hit" }, crop, infoOf(item));
  const frameUrl = d.frame;
  const fallback = (why) => {
    body.replaceChildren(el("p", { class: "none", text: why }), hit, actions);
    hydrate(body);
  };
  if (!frameUrl) {
    fallback("No full frame for this sighting (its source holds the crop only); the crop is shown.");
    return;
  }
  const frame = el("img", { id: "viewer-frame", alt: "full frame with the detection's box" });
  const zoom = el("div", { class: "zoom", id: "viewer-zoom" }, frame);
  const bar = el("div", { class: "zoom-bar" },
    el("button", { type: "button", "data-zoom": "out", "aria-label": "zoom out", text: "−" }),
    el("span", { id: "zoom-level", text: "fit" }),
    el("button", { type: "button", "data-zoom": "in", "aria-label": "zoom in", text: "+" }),
    el("button", { type: "button", "data-zoom": "person", text: "zoom to the person" }),
    el("button", { type: "button", "data-zoom": "fit", text: "fit" }));
  body.replaceChildren(el("p", {}, el("span", { class: "spinner", "aria-hidden": "true" }), "Loading the frame…"));
  const shown = state.index;
  api(frameUrl)
    .then((r) => r.blob())
    .then((blob) => {
      if (state.index !== shown || !$("#viewer").open) return;
      const u = URL.createObjectURL(blob);
      state.blobs.push(u);
      frame.addEventListener("load", () => setZoom(state.zoom), { once: true });
      frame.src = u;
      body.replaceChildren(zoom, bar, hit, actions);
      hydrate(body);
    })
    .catch((err) => { if (state.index === shown) fallback("The full frame cannot be shown (" + err.message + "); the crop is shown instead."); });
}

// Zoom the frame: level 1 fits the pane; higher levels are scrolled so that the person's box is in the middle.
function setZoom(level) {
  const zoom = $("#viewer-zoom");
  const img = $("#viewer-frame");
  if (!zoom || !img || !img.naturalWidth) return;
  state.zoom = Math.min(8, Math.max(1, level));
  img.style.width = state.zoom * 100 + "%";
  zoom.classList.toggle("zoomed", state.zoom > 1);
  $("#zoom-level").textContent = state.zoom === 1 ? "fit" : state.zoom.toFixed(state.zoom % 1 ? 1 : 0) + "×";
  const box = (state.items[state.index]?.dataset.box || "").split(",").map(Number);
  if (box.length === 4 && state.zoom > 1) {
    const s = img.clientWidth / img.naturalWidth;
    zoom.scrollLeft = ((box[0] + box[2]) / 2) * s - zoom.clientWidth / 2;
    zoom.scrollTop = ((box[1] + box[3]) / 2) * s - zoom.clientHeight / 2;
  }
}

function zoomToPerson() {
  const img = $("#viewer-frame");
  const zoom = $("#viewer-zoom");
  const box = (state.items[state.index]?.dataset.box || "").split(",").map(Number);
  if (!img || box.length !== 4) return setZoom(2);
  const fitScale = zoom.clientWidth / img.naturalWidth; // zoom level 1
  const wanted = (0.8 * Math.min(zoom.clientHeight || 400, 600)) / Math.max(1, box[3] - box[1]);
  setZoom(Math.max(2, Math.round((wanted / fitScale) * 2) / 2));
}

function onViewerClick(ev) {
  const z = ev.target.closest("[data-zoom]");
  if (z) {
    const how = z.dataset.zoom;
    if (how === "in") setZoom(state.zoom + 1);
    else if (how === "out") setZoom(state.zoom - 1);
    else if (how === "fit") setZoom(1);
    else zoomToPerson();
    return;
  }
  if (ev.target.id === "viewer-frame") {
    if (state.zoom > 1) setZoom(1);
    else zoomToPerson();
    return;
  }
  actionClick(ev);
}

// Confirm, reject, search from this: on cards, tiles and in the viewer.
function actionClick(ev) {
  const b = ev.target.closest("button.confirm, button.reject, button.search-from");
  if (!b) return false;
  ev.preventDefault();
  ev.stopPropagation();
  const id = b.dataset.detection;
  if (b.classList.contains("confirm")) mark(id, "yes");
  else if (b.classList.contains("reject")) mark(id, "no");
  else runQuery({ kind: "sighting", ids: [id] }, true);
  return true;
}

function onResultsClick(ev) {
  if (actionClick(ev)) return;
  const jump = ev.target.closest("a[href^='#app-']");
  if (jump) { // a timeline mark: select its card (no history entry)
    ev.preventDefault();
    const card = $(jump.getAttribute("href"));
    if (card) openViewer(cardsOf(), Math.max(0, cardsOf().indexOf(card)));
    return;
  }
  if (ev.target.closest("a")) return;
  const card = ev.target.closest(".appearance");
  if (card) openViewer(cardsOf(), cardsOf().indexOf(card));
}

function onKey(ev) {
  if (!$("#viewer").open || ev.target.closest("input, select, textarea")) return;
  if (ev.key === "ArrowRight") step(1);
  else if (ev.key === "ArrowLeft") step(-1);
  else if (ev.key === "Escape") closeViewer();
  else if (ev.key === "y") mark(state.items[state.index].dataset.detection, "yes");
  else if (ev.key === "n") mark(state.items[state.index].dataset.detection, "no");
  else if (ev.key === "+" || ev.key === "=") setZoom(state.zoom + 1);
  else if (ev.key === "-") setZoom(state.zoom - 1);
  else return;
  ev.preventDefault();
}

// -- browse a camera's sightings by time ---------------------------------------------------------------
function openBrowse(camera) {
  const params = new URLSearchParams({ view: "browse", camera });
  go(params, true);
  showView("browse");
  toMain();
  loadBrowse(params);
}

function bucketOf(s) {
  if (s.timestamp >= 1e8) return s.time_text.slice(0, 13) + ":00 UTC"; // the hour
  const m = Math.floor(s.timestamp / 60);
  return m + ":00 – " + (m + 1) + ":00 into the video (no date)";
}

async function loadBrowse(params) {
  const camera = params.get("camera") || $("#browse-camera").value || state.overview?.cameras[0]?.camera;
  $("#browse-since").value = params.get("since") || "";
  $("#browse-until").value = params.get("until") || "";
  $("#browse-tracks").checked = params.get("tracks") !== "0";
  const select = $("#browse-camera");
  select.dataset.want = camera || "";
  if ([...select.options].some((o) => o.value === camera)) select.value = camera;
  const body = $("#browse-body");
  if (!camera) {
    setStatus("empty", "No camera yet: the gallery is empty or still loading.", $("#browse-status"));
    return;
  }
  const offset = Math.max(0, Number(params.get("offset")) || 0);
  const q = new URLSearchParams({ camera, offset: String(offset), limit: String(BROWSE_LIMIT), per_track: String($("#browse-tracks").checked) });
  if (params.get("since")) q.set("since", params.get("since"));
  if (params.get("until")) q.set("until", params.get("until"));
  document.title = "reidkit: " + camera + " by time";
  setStatus("loading", "Loading " + camera + "'s sightings…", $("#browse-status"));
  let b;
  try {
    b = await (await api("sightings?" + q.toString())).json();
  } catch (err) {
    setStatus("error", err.message, $("#browse-status"));
    body.replaceChildren();
    return;
  }
  const unit = b.per_track ? "track" : "sighting";
  const last = Math.min(b.total, offset + b.sightings.length);
  const clock = b.clock === "offset" ? " Times are offsets into the video (no date)." : b.clock === "date" ? " Dates are UTC." : "";
  setStatus(b.total ? "ok" : "empty", b.total ? camera + ": " + plural(b.total, unit) + " in time order; " + (offset + 1) + "–" + last + " shown." + clock : camera + " has no sightings in that time range.", $("#browse-status"));
  const groups = new Map();
  for (const s of b.sightings) {
    const k = bucketOf(s);
    if (!groups.has(k)) groups.set(k, []);
    groups.get(k).push(s);
  }
  const nodes = [];
  for (const [label, list] of groups) {
    const tiles = el("div", { class: "tiles" });
    for (const s of list) tiles.append(tileOf(s, s.n_crops > 1 ? plural(s.n_crops, "crop") : ""));
    nodes.push(el("section", { class: "time-group" }, el("h3", { text: label }), tiles));
  }
  const pager = el("div", { class: "pager" });
  const page = (to) => {
    const p = new URLSearchParams(location.search);
    p.set("offset", String(to));
    if (to === 0) p.delete("offset");
    go(p, true);
    loadBrowse(p);
  };
  if (offset > 0) pager.append(button("‹ earlier", () => page(Math.max(0, offset - BROWSE_LIMIT))));
  if (last < b.total) pager.append(button("later ›", () => page(offset + BROWSE_LIMIT)));
  if (pager.childElementCount) nodes.push(pager);
  body.replaceChildren(...nodes);
  hydrate(body);
  applyMarks();
}

function button(text, fn, cls) {
  const b = el("button", { type: "button", class: cls || null, text });
  b.addEventListener("click", fn);
  return b;
}

function tileOf(s, extra) {
  const tile = el("button", {
    type: "button", class: "tile", "data-detection": String(s.id), "data-frame": s.frame_url, "data-camera": s.camera,
    "data-time": s.time_text, "data-track": s.track === null ? null : String(s.track), "data-source": s.source,
    "data-box": s.box ? s.box.join(",") : null, "data-crops": extra || null, title: s.camera + ", " + s.time_text,
  }, el("img", { alt: "sighting " + s.id, "data-src": s.crop_url }), el("b", { text: s.time_text }));
  tile.append(el("span", { text: (s.track === null ? "no track" : "track " + s.track) + (extra ? " · " + extra : "") }));
  return tile;
}

function onTilesClick(ev) {
  if (actionClick(ev)) return;
  const tile = ev.target.closest(".tile");
  if (!tile) return;
  const scope = tile.closest(".album") || ev.currentTarget;
  const tiles = $$(".tile", scope);
  openViewer(tiles, tiles.indexOf(tile));
}

// -- albums ---------------------------------------------------------------------------------------------
async function loadAlbums() {
  document.title = "reidkit: albums";
  const body = $("#albums-body");
  if (state.albums) return;
  setStatus("loading", "Grouping the gallery by person…", $("#albums-status"));
  let c;
  try {
    c = await (await api("clusters")).json();
  } catch (err) {
    setStatus("error", "Albums: " + err.message, $("#albums-status"));
    return;
  }
  state.albums = c;
  setStatus(c.clusters.length ? "ok" : "empty", plural(c.clusters.length, "album") + " from " + plural(c.n_items, c.level === "tracks" ? "track" : "sighting") + " (" + (c.rerank ? "re-ranked" : "cosine") + " distances, within " + c.eps.toFixed(2) + "); " + c.n_noise.toLocaleString() + " seen once or like nobody else are in none. An album is a guess: check it before you trust it.", $("#albums-status"));
  const nodes = [];
  for (const a of c.clusters) {
    const span = a.first_text === a.last_text ? a.first_text : a.first_text + " – " + a.last_text;
    const unit = c.level === "tracks" ? "track" : "sighting";
    const ids = a.sightings.map((s) => String(s.id));
    const find = button("Search for this person", () => runQuery(ids.length === 1 ? { kind: "sighting", ids } : { kind: "sightings", ids }, true), "primary");
    const tiles = el("div", { class: "tiles" });
    for (const s of a.sightings) tiles.append(tileOf(s, ""));
    nodes.push(el("article", { class: "album", "data-album": String(a.id) },
      el("header", {}, el("h3", { text: "Album " + (a.id + 1) }), el("p", { class: "meta", text: plural(a.size, unit) + " · " + plural(a.crops, "crop") + " · " + a.cameras.join(", ") + " · " + span }), find),
      tiles));
  }
  body.replaceChildren(...nodes);
  hydrate(body);
  applyMarks();
}

// -- wiring ----------------------------------------------------------------------------------------
function init() {
  loadMarks();
  const drop = $("#drop");
  const input = $("#file-input");
  const pictures = () => { if (state.files.length) runQuery({ kind: "pictures", ids: [] }, true); };
  $("#pick").addEventListener("click", (e) => { e.stopPropagation(); input.click(); });
  drop.addEventListener("click", () => input.click());
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); input.click(); } });
  input.addEventListener("change", () => { setFiles(input.files); pictures(); });
  for (const t of ["dragenter", "dragover"]) drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.add("over"); });
  for (const t of ["dragleave", "drop"]) drop.addEventListener(t, () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    const files = [...e.dataTransfer.files];
    if (!files.length) return;
    setFiles(files);
    pictures();
  });
  document.addEventListener("dragover", (e) => e.preventDefault());
  document.addEventListener("drop", (e) => e.preventDefault());
  $("#search-btn").addEventListener("click", pictures);
  $("#clear-btn").addEventListener("click", () => {
    input.value = "";
    setFiles([]);
    releaseBlobs();
    showHello();
    go(new URLSearchParams(), true);
    showView("search");
    $("#results").replaceChildren(el("p", { class: "none", text: "Cleared. Drop a picture or click a sighting to search." }));
    loadOverview();
  });
  $("#results").addEventListener("click", onResultsClick);
  $("#browse-body").addEventListener("click", onTilesClick);
  $("#albums-body").addEventListener("click", onTilesClick);
  $("#viewer").addEventListener("click", onViewerClick);
  $("#viewer-prev").addEventListener("click", () => step(-1));
  $("#viewer-next").addEventListener("click", () => step(1));
  $("#viewer-close").addEventListener("click", closeViewer);
  $("#again-btn").addEventListener("click", searchAgain);
  $("#report-btn").addEventListener("click", downloadReport);
  $("#share-btn").addEventListener("click", copyLink);
  $("#hide-rejected").addEventListener("change", () => $(".results")?.classList.toggle("hide-rejected", $("#hide-rejected").checked));
  document.addEventListener("keydown", onKey);
  for (const tab of $$(".tab")) {
    tab.addEventListener("click", (e) => {
      e.preventDefault();
      const view = tab.dataset.view;
      const params = new URLSearchParams();
      if (view === "search") {
        queryToParams(params, state.query);
        filtersToParams(params);
      } else params.set("view", view);
      if (view === "browse" && $("#browse-camera").value) params.set("camera", $("#browse-camera").value);
      go(params, true);
      showView(view);
      toMain();
      if (view === "browse") loadBrowse(params);
      if (view === "albums") loadAlbums();
    });
  }
  $("#browse-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const params = new URLSearchParams({ view: "browse", camera: $("#browse-camera").value });
    if ($("#browse-since").value.trim()) params.set("since", $("#browse-since").value.trim());
    if ($("#browse-until").value.trim()) params.set("until", $("#browse-until").value.trim());
    if (!$("#browse-tracks").checked) params.set("tracks", "0");
    go(params, true);
    loadBrowse(params);
  });
  window.addEventListener("popstate", applyUrl);
  $("#token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("#token-input").value.trim());
    $("#token-msg").textContent = "";
    loadOverview().then(() => {
      if (galleryReady) $("#token-form").hidden = true;
      if (galleryReady && location.search) applyUrl();
    });
  });
  fetch("health")
    .then((r) => r.json())
    .then((h) => {
      if (h.auth && !token()) askToken("This service needs a token.");
      else if (h.auth) $("#token-form").hidden = false;
      return h;
    })
    .catch(() => ({}))
    .then((h) => loadOverview().then(() => { if (!h.auth || token()) applyUrl(); }));
  state.overviewTimer = setInterval(() => { if (!document.hidden && !state.busy) loadOverview(); }, 15000);
}

document.addEventListener("DOMContentLoaded", init);
