// reidkit search page: plain JavaScript, no dependencies. Talks to the service's API (same origin).
"use strict";

const TOKEN_KEY = "reidkit-token";
const $ = (sel, root = document) => root.querySelector(sel);
const state = { files: [], blobs: [], authNeeded: false, overviewTimer: null, busy: false };

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
  for (const c of children) e.append(c);
  return e;
}

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
  for (const img of root.querySelectorAll("img[data-src]")) showPicture(img, img.dataset.src);
}

function askToken(message) {
  state.authNeeded = true;
  const form = $("#token-form");
  form.hidden = false;
  $("#token-msg").textContent = message || "";
  $("#token-input").focus();
}

// -- status line ------------------------------------------------------------------------------------
function setStatus(kind, text) {
  const box = $("#status");
  box.replaceChildren();
  if (!kind) return;
  const div = el("div", { class: "status " + kind });
  if (kind === "loading") div.append(el("span", { class: "spinner", "aria-hidden": "true" }));
  div.append(text);
  box.append(div);
}

// -- gallery overview --------------------------------------------------------------------------------
function stat(value, label) {
  return el("div", { class: "stat" }, el("b", { text: String(value) }), el("span", { text: label }));
}

function sightingTile(s) {
  const img = el("img", { alt: s.camera + " " + s.time_text, "data-src": s.crop_url });
  const tile = el("button", { type: "button", class: "sight", title: "search from sighting " + s.id + " (" + s.camera + ", " + s.time_text + ")" }, img, el("span", { text: s.camera }));
  tile.addEventListener("click", () => searchFromSighting(s.id, s.crop_url));
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
  $("#gallery-name").textContent = "gallery “" + g.gallery + "”" + (g.model ? " · model " + g.model : "");
  if (g.totals.sightings === 0) {
    body.replaceChildren(el("p", { class: "none", text: "The gallery is empty: add footage or photos with reidkit ingest; new sightings show up here." }));
    updateSearchButton(false);
    return;
  }
  const nodes = [];
  const span = g.time_span.start_text === g.time_span.end_text ? g.time_span.start_text : g.time_span.start_text + " – " + g.time_span.end_text;
  nodes.push(el("div", { class: "stats" }, stat(g.totals.sightings.toLocaleString(), "sightings"), stat(g.totals.tracks.toLocaleString(), "tracks"), stat(g.totals.cameras, "cameras"), stat(g.totals.sources, "sources")));
  nodes.push(el("p", { class: "meta", text: "time span " + span }));
  if (g.searchable < g.totals.sightings) nodes.push(el("p", { class: "meta", text: (g.totals.sightings - g.searchable).toLocaleString() + " new sightings are being added to the search index" }));
  const table = el("table", { class: "cams" });
  table.append(el("thead", {}, el("tr", {}, el("th", { text: "camera" }), el("th", { text: "sightings" }), el("th", { text: "tracks" }), el("th", { text: "first – last" }))));
  const tbody = el("tbody");
  for (const c of g.cameras) {
    tbody.append(el("tr", {}, el("td", { text: c.camera }), el("td", { class: "n", text: c.sightings.toLocaleString() }), el("td", { class: "n", text: c.tracks.toLocaleString() }), el("td", { text: c.first_text + " – " + c.last_text })));
  }
  table.append(tbody);
  nodes.push(table);
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
  const ticked = new Set([...box.querySelectorAll("input:checked")].map((i) => i.value));
  const have = [...box.querySelectorAll("input")].map((i) => i.value);
  if (have.join("\n") === cameras.join("\n")) return;
  box.replaceChildren(el("legend", { text: "Cameras (none ticked: all)" }));
  for (const c of cameras) {
    const input = el("input", { type: "checkbox", value: c });
    input.checked = ticked.has(c);
    box.append(el("label", {}, input, " " + c));
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

function options(form) {
  const v = (id) => $(id).value.trim();
  if (v("#opt-top")) form.append("top", v("#opt-top"));
  if (v("#opt-review")) form.append("review", v("#opt-review"));
  if (v("#opt-since")) form.append("since", v("#opt-since"));
  if (v("#opt-until")) form.append("until", v("#opt-until"));
  if (v("#opt-threshold")) form.append("threshold", v("#opt-threshold"));
  form.append("fuse", $("#opt-fuse").value);
  form.append("rerank", $("#opt-rerank").checked ? "true" : "false");
  for (const c of document.querySelectorAll("#opt-cameras input:checked")) form.append("camera", c.value);
}

async function runSearch(form, what) {
  state.busy = true;
  updateSearchButton();
  setStatus("loading", "Searching the gallery for " + what + "…");
  try {
    const r = await api("search/html", { method: "POST", body: form });
    showResults(await r.text(), what);
  } catch (err) {
    setStatus("error", "Search failed: " + err.message);
    releaseBlobs();
    $("#results").replaceChildren(el("p", { class: "none", text: err.status === 401 ? "Enter the token above, then search again." : "No results: fix the query and search again." }));
  } finally {
    state.busy = false;
    updateSearchButton();
  }
}

function searchPictures() {
  if (!state.files.length) return;
  const form = new FormData();
  for (const f of state.files) form.append("image", f, f.name);
  options(form);
  runSearch(form, state.files.length === 1 ? state.files[0].name : state.files.length + " pictures");
}

function searchFromSighting(id, cropUrl) {
  state.files = [];
  const box = $("#query-thumbs");
  const img = el("img", { alt: "sighting " + id, "data-src": cropUrl || "crops/" + id });
  box.replaceChildren(el("figure", {}, img, el("figcaption", { text: "sighting " + id })));
  hydrate(box);
  updateSearchButton();
  const form = new FormData();
  form.append("sighting", String(id));
  options(form);
  state.querySighting = String(id);
  runSearch(form, "sighting " + id);
}

// -- results ---------------------------------------------------------------------------------------
function showResults(fragment, what) {
  releaseBlobs();
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
  const n = Number(root?.dataset.appearances || 0);
  const cams = Number(root?.dataset.cameras || 0);
  const near = Number(root?.dataset.near || 0);
  if (root?.dataset.queryKind !== "images" && state.querySighting) {
    const self = results.querySelector(`.appearance[data-detection="${CSS.escape(state.querySighting)}"]`);
    if (self) self.classList.add("query-self");
  }
  state.querySighting = null;
  if (n === 0) {
    setStatus("empty", "Nothing matched " + what + ": no appearance passed the match rule." + (near ? " The " + near + " closest candidates are listed below for review." : ""));
  } else {
    setStatus("ok", n + " appearance" + (n === 1 ? "" : "s") + " on " + cams + " camera" + (cams === 1 ? "" : "s") + (near ? "; " + near + " more for review" : "") + ".");
  }
}

function cardOf(target) {
  return target.closest(".appearance");
}

function openViewer(card) {
  const dialog = $("#viewer");
  const body = $("#viewer-body");
  const info = card.querySelector(".info");
  const camera = card.closest("section.camera")?.dataset.camera || "";
  $("#viewer-title").textContent = (camera ? camera + " · " : "") + "detection " + card.dataset.detection;
  body.replaceChildren(el("p", {}, el("span", { class: "spinner", "aria-hidden": "true" }), "Loading the frame…"));
  if (!dialog.open) dialog.showModal();
  const caption = el("p", { text: info ? info.innerText.replace(/\s*search from this\s*$/, "").replace(/\s*frame\s*$/, "").replace(/\n+/g, " · ") : "" });
  const frameUrl = card.dataset.frame;
  const fallback = (why) => {
    const crop = el("img", { alt: "crop of detection " + card.dataset.detection, "data-src": "crops/" + card.dataset.detection });
    body.replaceChildren(el("p", { class: "none", text: why }), crop, caption);
    hydrate(body);
  };
  if (!frameUrl) {
    fallback("No full frame for this sighting (its source holds the crop only); the crop is shown.");
    return;
  }
  api(frameUrl)
    .then((r) => r.blob())
    .then((blob) => {
      const u = URL.createObjectURL(blob);
      state.blobs.push(u);
      body.replaceChildren(el("img", { id: "viewer-frame", src: u, alt: "full frame with the detection's box" }), caption);
    })
    .catch((err) => fallback("The full frame cannot be shown (" + err.message + "); the crop is shown instead."));
}

function onResultsClick(ev) {
  const searchFrom = ev.target.closest("button.search-from");
  if (searchFrom) {
    ev.preventDefault();
    const id = searchFrom.dataset.detection;
    searchFromSighting(id, "crops/" + id);
    return;
  }
  if (ev.target.closest("a")) return; // timeline marks jump to their card
  const card = cardOf(ev.target);
  if (card) openViewer(card);
}

// -- wiring ----------------------------------------------------------------------------------------
function init() {
  const drop = $("#drop");
  const input = $("#file-input");
  $("#pick").addEventListener("click", (e) => { e.stopPropagation(); input.click(); });
  drop.addEventListener("click", () => input.click());
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); input.click(); } });
  input.addEventListener("change", () => { setFiles(input.files); if (state.files.length) searchPictures(); });
  for (const t of ["dragenter", "dragover"]) drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.add("over"); });
  for (const t of ["dragleave", "drop"]) drop.addEventListener(t, () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    const files = [...e.dataTransfer.files];
    if (!files.length) return;
    setFiles(files);
    searchPictures();
  });
  document.addEventListener("dragover", (e) => e.preventDefault());
  document.addEventListener("drop", (e) => e.preventDefault());
  $("#search-btn").addEventListener("click", searchPictures);
  $("#clear-btn").addEventListener("click", () => {
    input.value = "";
    setFiles([]);
    releaseBlobs();
    setStatus(null);
    $("#results").replaceChildren(el("p", { class: "none", text: "Cleared. Drop a picture or click a sighting to search." }));
    loadOverview();
  });
  $("#results").addEventListener("click", onResultsClick);
  $("#token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("#token-input").value.trim());
    $("#token-msg").textContent = "";
    loadOverview().then(() => { if (galleryReady) $("#token-form").hidden = true; });
  });
  fetch("health")
    .then((r) => r.json())
    .then((h) => {
      if (h.auth && !token()) askToken("This service needs a token.");
      else if (h.auth) $("#token-form").hidden = false;
    })
    .catch(() => {})
    .finally(() => loadOverview());
  state.overviewTimer = setInterval(() => { if (!document.hidden && !state.busy) loadOverview(); }, 15000);
}

document.addEventListener("DOMContentLoaded", init);
