// The page of `memstore serve`: plain JavaScript over the JSON API (/docs lists it), no CDN.
"use strict";

const state = { offset: 0, limit: 100, rowId: null, writable: false, thumbnails: false };
const $ = (id) => document.getElementById(id);
const token = new URLSearchParams(location.hash.split("?")[1] || "").get("token")
  || sessionStorage.getItem("memstore-token");
if (token) sessionStorage.setItem("memstore-token", token);

// body: an object (sent as JSON) or a File / Blob (sent as it is, e.g. an image)
async function api(path, params = {}, body = null) {
  const url = new URL(path, location.origin);
  const version = $("version").value;
  if (version && !("version" in params)) params.version = version;
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== "") url.searchParams.set(k, v);
  const init = { headers: {} };
  if (token) init.headers.Authorization = "Bearer " + token;
  if (body instanceof Blob) { init.method = "POST"; init.headers["Content-Type"] = body.type || "application/octet-stream"; init.body = body; }
  else if (body) { init.method = "POST"; init.headers["Content-Type"] = "application/json"; init.body = JSON.stringify(body); }
  const response = await fetch(url, init);
  const data = await response.json();
  if (!response.ok) {
    const detail = typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail);
    throw new Error(detail || response.statusText);
  }
  return data;
}

function show(error) {
  $("error").hidden = !error;
  $("error").textContent = error ? String(error.message || error) : "";
}

function cell(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "number") return Number.isInteger(value) ? String(value) : value.toPrecision(4);
  return String(value);
}

// rows: list of objects; onClick(row) makes each row a link
function fill(table, rows, columns = null, onClick = null) {
  columns = columns || (rows.length ? Object.keys(rows[0]) : []);
  table.replaceChildren();
  const head = table.createTHead().insertRow();
  for (const c of columns) { const th = document.createElement("th"); th.textContent = c; head.appendChild(th); }
  const body = table.createTBody();
  for (const row of rows) {
    const tr = body.insertRow();
    for (const c of columns) {
      const td = tr.insertCell();
      const value = row[c];
      if (value instanceof Node) td.appendChild(value); else td.textContent = cell(value);
      if (typeof value === "number") td.className = "num";
    }
    if (onClick) { tr.className = "link"; tr.addEventListener("click", () => onClick(row)); }
  }
}

function openRow(row) { location.hash = "#row/" + row.id; }

// a thumbnail (a data: URI from the API) as an <img>, or "" where the row has none
function picture(uri, size = 48) {
  if (!uri) return "";
  const img = document.createElement("img");
  img.src = uri; img.width = size; img.height = size; img.className = "thumb"; img.alt = "";
  return img;
}

// the rows of a page as a grid of thumbnails with id and label, each a link to the row
function grid(box, rows) {
  box.replaceChildren(...rows.map((r) => {
    const card = document.createElement("a");
    card.className = "card"; card.href = "#row/" + r.id;
    const caption = document.createElement("span");
    caption.textContent = `${r.id} ${cell(r.label)}`;
    card.append(picture(r.thumbnail, 64), caption);
    return card;
  }));
}

async function overview() {
  const o = await api("/api/overview");
  state.writable = o.writable;
  state.thumbnails = o.thumbnails;
  $("forget-box").hidden = !state.writable;  // a row view may have been shown before this answer
  $("upload-box").hidden = !o.thumbnails;
  $("title").textContent = "memstore: " + o.path;
  const facts = { version: o.version, rows: o.rows, dim: o.dim, labels: o.labels.length, versions: o.versions,
    tags: o.tags.join(", ") || "none", "bytes on disk": o.bytes_on_disk.toLocaleString(),
    index: o.index ? `${o.index.index_type || o.index.type || "yes"}` : "none (exact search)" };
  $("facts").replaceChildren(...Object.entries(facts).flatMap(([k, v]) => {
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = cell(v);
    return [dt, dd];
  }));
  fill($("labels"), o.labels, ["label", "rows"],
    (r) => { $("where").value = `label = '${String(r.label).replace(/'/g, "''")}'`; location.hash = "#samples"; samples(0); });
  const order = $("order");
  if (!order.options.length) for (const c of o.columns) order.add(new Option(c, c));
}

async function samples(offset = state.offset) {
  state.offset = Math.max(0, offset);
  const asGrid = state.thumbnails && !$("as-table").checked;
  const asked = state.samplesAsked = (state.samplesAsked || 0) + 1;
  const page = await api("/api/samples", { where: $("where").value, order: $("order").value || "id",
    descending: $("descending").checked, offset: state.offset, limit: state.limit, thumbnails: asGrid });
  if (asked !== state.samplesAsked) return;  // a later request was made: its answer is the one to show
  $("samples-count").textContent = `${page.total.toLocaleString()} rows; ${page.offset + 1}` +
    `-${page.offset + page.rows.length} shown (version ${page.version})`;
  $("samples-grid").hidden = !asGrid;
  $("samples").hidden = asGrid;
  if (asGrid) grid($("samples-grid"), page.rows); else fill($("samples"), page.rows, null, openRow);
}

async function row(id) {
  state.rowId = id;
  const r = await api("/api/rows/" + id, { k: 10 });
  $("row-id").textContent = id;
  $("row-picture").replaceChildren(picture(r.thumbnail, 128));
  $("row-facts").replaceChildren(...Object.entries(r.row).flatMap(([k, v]) => {
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = cell(v);
    return [dt, dd];
  }));
  fill($("row-history"), r.history, ["valid_from", "valid_to", "label", "weight", "wrong_count"]);
  const pictured = Boolean(r.thumbnail) || r.neighbours.some((n) => n.thumbnail);  // not state: see the start
  fill($("row-neighbours"), r.neighbours.map((n) => ({ ...n, image: picture(n.thumbnail) })),
    pictured ? ["image", "id", "label", "distance", "uri"] : ["id", "label", "distance", "uri"], openRow);
  $("prediction").textContent = "";
  $("explanation").replaceChildren();
  $("forget-box").hidden = !state.writable;
}

async function explain() {
  showDecision(await api(`/api/rows/${state.rowId}/explain`, { k: $("explain-k").value }),
    $("prediction"), $("explanation"));
}

async function explainUpload() {
  const file = $("upload").files[0];
  if (!file) throw new Error("choose an image file first");
  $("upload-preview").replaceChildren(picture(URL.createObjectURL(file), 96));
  showDecision(await api("/api/explain-image", { k: $("upload-k").value }, file),
    $("upload-prediction"), $("upload-explanation"));
}

// a decision of the kNN classifier: the prediction, and each neighbour's share of the vote
function showDecision(e, line, table) {
  const shares = Object.entries(e.probabilities).map(([l, p]) => `${l} ${(100 * p).toFixed(1)}%`).join(", ");
  line.textContent = `predicted ${e.predicted} (${shares})`;
  const rows = e.neighbours.map((n) => {
    const bar = document.createElement("span");
    bar.className = "bar"; bar.style.width = (200 * n.share).toFixed(1) + "px";
    const who = document.createElement("span");
    who.className = n.supports ? "supports" : "against";
    who.textContent = n.supports ? "for" : "against";
    return { rank: n.rank, image: picture(n.thumbnail), id: n.id, label: n.label, distance: n.distance,
      share: n.share, "": bar, vote: who };
  });
  fill(table, rows, (state.thumbnails ? ["rank", "image"] : ["rank"]).concat(
    ["id", "label", "distance", "share", "", "vote"]), openRow);
}

async function forgetRow() {
  if (!confirm(`Forget row ${state.rowId} from every version? This cannot be undone.`)) return;
  const report = await api("/api/forget", {}, { ids: [state.rowId], message: "forgotten from the page" });
  alert(`forgotten: ${report.rows} row(s), version ${report.version}`);
  location.hash = "#samples";
}

async function quality() {
  const q = await api("/api/quality");
  $("quality-note").textContent = q.estimated
    ? "Rows most often a neighbour of another label (mem.estimate_quality), with their own neighbours."
    : "No estimate yet: run mem.estimate_quality() (or `memstore quality PATH`) first.";
  fill($("quality"), q.rows.map((r) => {
    const row = { id: r.id, label: r.label, wrong_count: r.wrong_count, weight: r.weight };
    if (state.thumbnails) {
      row.image = picture(r.thumbnail, 64);
      const beside = document.createElement("span");
      beside.append(...r.neighbours.map((n) => {
        const one = document.createElement("span");
        one.className = "neighbour"; one.title = `row ${n.id}: ${n.label}`;
        const caption = document.createElement("span"); caption.textContent = cell(n.label);
        one.append(picture(n.thumbnail, 40), caption);
        return one;
      }));
      row.neighbours = beside;
    } else row.neighbours = r.neighbours.map((n) => `${n.id}:${n.label}`).join("  ");
    return row;
  }), state.thumbnails ? ["image", "id", "label", "wrong_count", "weight", "neighbours"] : null, openRow);
}

async function versions() {
  const v = await api("/api/versions");
  const select = $("version");
  const chosen = select.value;
  select.replaceChildren(new Option("newest", ""));
  for (const t of v.tags) select.add(new Option(`${t.name} (${t.version})`, t.name));
  for (const r of v.versions) select.add(new Option(`${r.version} ${r.operation}`, String(r.version)));
  select.value = chosen;
  if (!$("diff-a").value) { $("diff-a").value = Math.max(0, v.head - 1); $("diff-b").value = v.head; }
  return v;
}

async function timeline() {
  const v = await versions();
  fill($("timeline"), v.versions.slice(0, 500), ["version", "time", "operation", "message", "rows", "rows_affected"]);
}

async function compare() {
  const d = await api("/api/diff", { a: $("diff-a").value, b: $("diff-b").value, limit: 50 });
  const box = $("diff");
  box.replaceChildren();
  const h = document.createElement("h2");
  h.textContent = `From version ${d.a} to ${d.b}`;
  box.appendChild(h);
  const table = document.createElement("table");
  fill(table, Object.entries(d.counts).map(([kind, n]) => ({ change: kind, rows: n,
    ids: d.ids[kind].join(", ") + (d.truncated[kind] ? ", ..." : "") })), ["change", "rows", "ids"]);
  box.appendChild(table);
}

async function runSql() {
  const r = await api("/api/sql", {}, { query: $("query").value, version: $("version").value || null });
  $("sql-count").textContent = `${r.total} rows${r.truncated ? ` (first ${r.rows.length} shown)` : ""}` +
    (r.omitted_columns.length ? `; vectors not shown: ${r.omitted_columns.join(", ")}` : "");
  fill($("sql-result"), r.rows, r.columns.filter((c) => !r.omitted_columns.includes(c)));
}

const views = { overview, samples: () => samples(0), quality, versions: timeline, sql: async () => {} };

async function route() {
  const [name, arg] = (location.hash.slice(1).split("?")[0] || "overview").split("/");
  const view = name === "row" ? "row" : (name in views ? name : "overview");
  for (const s of document.querySelectorAll("main > section")) s.hidden = s.id !== "view-" + view;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.view === view);
  try {
    show(null);
    if (view === "row") await row(Number(arg)); else await views[view]();
  } catch (error) { show(error); }
}

function guarded(fn) { return async (event) => { if (event) event.preventDefault(); try { show(null); await fn(); } catch (e) { show(e); } }; }

$("samples-form").addEventListener("submit", guarded(() => samples(0)));
$("prev").addEventListener("click", guarded(() => samples(state.offset - state.limit)));
$("next").addEventListener("click", guarded(() => samples(state.offset + state.limit)));
$("explain").addEventListener("click", guarded(explain));
$("upload-form").addEventListener("submit", guarded(explainUpload));
$("forget").addEventListener("click", guarded(forgetRow));
$("diff-form").addEventListener("submit", guarded(compare));
$("sql-form").addEventListener("submit", guarded(runSql));
$("version").addEventListener("change", route);
window.addEventListener("hashchange", route);
// the overview first where the view reads what it says (thumbnails: a grid or a table); a row needs
// nothing of it, so a link to a row loads all three side by side
(async () => {
  const first = overview().catch(show);
  if (!location.hash.startsWith("#row/")) await first;
  await Promise.all([first, route(), versions().catch(show)]);  // the view asked first, the picker after
})();
