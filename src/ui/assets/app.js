// berth dashboard: progressive enhancement only. Every page works without this script;
// it adds live logs (SSE), live deployment status, copy buttons, confirm dialogs,
// instant site filtering and the typed-name guard of the delete button.
"use strict";
document.documentElement.classList.add("js");

const csrf = () => (document.querySelector('meta[name="csrf-token"]') || {}).content || "";

// ---- confirm dialogs: <form data-confirm="question">
document.addEventListener("submit", (ev) => {
  const form = ev.target;
  const q = form.getAttribute && form.getAttribute("data-confirm");
  if (q && !window.confirm(q)) { ev.preventDefault(); return; }
  // Loading state, and no double submit while the server works (creating a site checks
  // the repository first).
  const button = ev.submitter || form.querySelector('button[type="submit"]');
  if (button && form.method.toLowerCase() === "post") {
    setTimeout(() => { button.disabled = true; button.setAttribute("aria-busy", "true"); button.dataset.label = button.textContent; button.textContent = "Working…"; }, 0);
  }
});
// Coming back with the back button shows the page as it was, buttons usable again.
window.addEventListener("pageshow", () => document.querySelectorAll("button[aria-busy]").forEach((b) => {
  b.disabled = false; b.removeAttribute("aria-busy"); if (b.dataset.label) b.textContent = b.dataset.label;
}));

// ---- copy buttons: <button data-copy="#selector">
async function copyText(text, button) {
  try {
    await navigator.clipboard.writeText(text);
  } catch (_) {
    const ta = document.createElement("textarea");
    ta.value = text; document.body.appendChild(ta); ta.select();
    try { document.execCommand("copy"); } catch (_) { /* nothing else to try */ }
    ta.remove();
  }
  const old = button.textContent;
  button.textContent = "Copied";
  setTimeout(() => { button.textContent = old; }, 1500);
}
document.addEventListener("click", (ev) => {
  const b = ev.target.closest("[data-copy]");
  if (!b) return;
  const el = document.querySelector(b.getAttribute("data-copy"));
  if (el) copyText(el.innerText, b);
});

// ---- relative times
function relTimes(root) {
  const now = Date.now();
  root.querySelectorAll("time[datetime]").forEach((t) => {
    const at = Date.parse(t.getAttribute("datetime"));
    if (isNaN(at)) return;
    const s = Math.max(0, Math.round((now - at) / 1000));
    const text = s < 60 ? "just now" : s < 3600 ? `${Math.floor(s / 60)} min ago`
      : s < 86400 ? `${Math.floor(s / 3600)} h ago` : `${Math.floor(s / 86400)} d ago`;
    t.textContent = text;
  });
}

// ---- ANSI colours (SGR 0, 1, 30-37, 90-97) to spans; text stays text (no HTML injection)
function ansiLine(text, out) {
  const re = /\x1b\[([0-9;]*)m/g;
  let last = 0, cls = [], m;
  const push = (s) => {
    if (!s) return;
    const span = document.createElement("span");
    if (cls.length) span.className = cls.join(" ");
    span.textContent = s;
    out.appendChild(span);
  };
  while ((m = re.exec(text)) !== null) {
    push(text.slice(last, m.index));
    last = re.lastIndex;
    for (const code of (m[1] || "0").split(";").map(Number)) {
      if (code === 0) cls = [];
      else if (code === 1) cls.push("a-b");
      else if (code >= 30 && code <= 37) cls = cls.filter((c) => c === "a-b").concat(`a-${code}`);
      else if (code >= 90 && code <= 97) cls = cls.filter((c) => c === "a-b").concat(`a-${code - 60}`);
      else if (code === 39) cls = cls.filter((c) => c === "a-b");
    }
  }
  push(text.slice(last));
}

// ---- log viewers: <div data-logview data-src="…/logs/stream?kind=build">
// Streams are closed before the page goes away, so they never hold the browser's
// connections to this host while the next page loads.
const streams = [];
const closeStreams = () => streams.splice(0).forEach((es) => es.close());
window.addEventListener("pagehide", closeStreams);
window.addEventListener("beforeunload", closeStreams);
function startLogView(view) {
  if (view.dataset.started) return;
  view.dataset.started = "1";
  const body = view.querySelector("[data-log-body]");
  const state = view.querySelector("[data-log-state]");
  const search = view.querySelector("[data-log-search]");
  const follow = view.querySelector("[data-log-follow]");
  let stick = true;
  body.addEventListener("scroll", () => {
    stick = body.scrollTop + body.clientHeight >= body.scrollHeight - 8;
    follow.hidden = stick;
  });
  follow.addEventListener("click", () => { stick = true; body.scrollTop = body.scrollHeight; follow.hidden = true; });
  const matches = (ln) => !search.value || ln.textContent.toLowerCase().includes(search.value.toLowerCase());
  search.addEventListener("input", () => body.querySelectorAll(".ln").forEach((ln) => { ln.hidden = !matches(ln); }));
  view.querySelector("[data-log-copy]").addEventListener("click", (ev) => {
    const text = Array.from(body.querySelectorAll(".ln")).filter((l) => !l.hidden).map((l) => l.textContent).join("\n");
    copyText(text, ev.target);
  });
  state.textContent = "Connecting…";
  const es = new EventSource(view.dataset.src);
  streams.push(es);
  es.addEventListener("open", () => { state.textContent = "Live"; });
  es.addEventListener("line", (ev) => {
    let l;
    try { l = JSON.parse(ev.data); } catch (_) { return; }
    const ln = document.createElement("span");
    ln.className = "ln" + (l.stream === "system" ? " sys" : l.stream === "stderr" ? " err" : "");
    ansiLine(l.line, ln);
    ln.hidden = !matches(ln);
    body.appendChild(ln);
    view.dataset.lines = String((Number(view.dataset.lines) || 0) + 1);
    if (stick) body.scrollTop = body.scrollHeight;
  });
  es.addEventListener("error", () => { state.textContent = es.readyState === 2 ? "Disconnected" : "Reconnecting…"; });
}
document.querySelectorAll("[data-logview][data-autostart]").forEach(startLogView);
document.querySelectorAll("details").forEach((d) => d.addEventListener("toggle", () => {
  if (d.open) d.querySelectorAll("[data-logview]").forEach(startLogView);
}));

// ---- live deployment status: <section data-deployment-watch="dpl_…">
const BADGES = {
  live: ["✓", "Live", "ok"], building: ["◐", "Building", "busy"], queued: ["…", "Queued", "busy"],
  deploying: ["◐", "Deploying", "busy"], failed: ["✕", "Failed", "bad"], cancelled: ["⊘", "Cancelled", "idle"],
  superseded: ["↺", "Superseded", "idle"],
};
function watchDeployment(section) {
  const id = section.dataset.deploymentWatch;
  const final = ["live", "failed", "cancelled", "superseded"];
  const tick = async () => {
    let d;
    try {
      const r = await fetch(`/api/deployments/${encodeURIComponent(id)}`, { credentials: "same-origin" });
      if (!r.ok) throw new Error(String(r.status));
      d = await r.json();
    } catch (_) { setTimeout(tick, 3000); return; }
    const [icon, label, tone] = BADGES[d.status] || ["•", d.status, "idle"];
    const holder = section.querySelector("[data-deployment-badge]");
    const badge = document.createElement("span");
    badge.className = `badge badge-${tone}`;
    badge.dataset.status = d.status;
    const i = document.createElement("span");
    i.className = "badge-icon"; i.setAttribute("aria-hidden", "true"); i.textContent = icon;
    badge.append(i, label);
    holder.replaceChildren(badge);
    // The site's own badge follows its production deployment once that one settles.
    const siteBadge = document.querySelector("h1 .badge");
    if (siteBadge && d.environment === "production" && final.includes(d.status)) {
      siteBadge.replaceWith(badge.cloneNode(true));
    }
    section.dataset.status = d.status;
    const link = document.getElementById("live-link");
    if (link) link.hidden = d.status !== "live";
    if (d.error && !document.getElementById("deployment-error")) {
      const n = document.createElement("div");
      n.className = "notice notice-error"; n.id = "deployment-error"; n.textContent = d.error;
      section.appendChild(n);
    }
    if (!final.includes(d.status)) setTimeout(tick, 1000);
  };
  if (!final.includes(section.dataset.status)) tick();
}
document.querySelectorAll("[data-deployment-watch]").forEach(watchDeployment);

// ---- instant site filter
const filterForm = document.querySelector("[data-filter-form]");
if (filterForm) {
  const input = filterForm.querySelector("[data-filter-input]");
  const status = filterForm.querySelector("[data-filter-status]");
  const apply = () => {
    const q = input.value.trim().toLowerCase();
    let shown = 0;
    document.querySelectorAll("#sites-grid [data-site]").forEach((card) => {
      const ok = (!q || card.dataset.search.toLowerCase().includes(q)) && (!status.value || card.dataset.status === status.value);
      card.hidden = !ok;
      if (ok) shown++;
    });
    const empty = document.getElementById("filter-empty");
    if (empty) empty.hidden = shown > 0;
  };
  input.addEventListener("input", apply);
  status.addEventListener("change", apply);
}

// ---- create form: show the inputs of the chosen source
document.querySelectorAll("[data-source-kind]").forEach((radio) => radio.addEventListener("change", () => {
  const kind = document.querySelector("[data-source-kind]:checked").value;
  document.querySelectorAll("[data-source-panel]").forEach((p) => {
    p.hidden = !p.dataset.sourcePanel.split(" ").includes(kind);
  });
}));

// ---- typed-name confirmation: the delete button waits for the exact name
document.querySelectorAll("[data-typed-confirm]").forEach((form) => {
  const want = form.dataset.typedConfirm;
  const input = form.querySelector('input[name="confirm"]');
  const button = form.querySelector('button[type="submit"]');
  const sync = () => { button.disabled = input.value.trim() !== want; };
  input.addEventListener("input", sync);
  sync();
});

relTimes(document);
setInterval(() => relTimes(document), 30000);
