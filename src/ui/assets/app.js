// berth dashboard: progressive enhancement only. Every page works without this script;
// it adds live logs (SSE), live deployment status, the live check of custom domains,
// copy buttons, confirm dialogs, instant site filtering and the typed-name guard of the
// delete button.
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
    if (!navigator.clipboard) throw new Error("no clipboard API");
    await navigator.clipboard.writeText(text);
  } catch (_) {
    // No clipboard API (a plain-HTTP page on another host) or refused: the text is shown
    // selected in a read-only field beside the button, to copy by hand.
    let field = button.parentElement.querySelector("[data-copy-fallback]");
    if (!field) {
      field = document.createElement(text.includes("\n") ? "textarea" : "input");
      field.readOnly = true;
      field.className = "copy-fallback";
      field.setAttribute("data-copy-fallback", "");
      field.setAttribute("aria-label", "Select and copy this text");
      button.after(field);
    }
    field.value = text;
    field.focus();
    field.select();
    button.textContent = "Press Ctrl+C";
    return;
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
    // Expiry dates lie ahead: "in 7 d", not "just now".
    if (at - now >= 60000) {
      const f = Math.round((at - now) / 1000);
      t.textContent = f < 3600 ? `in ${Math.floor(f / 60)} min`
        : f < 86400 ? `in ${Math.floor(f / 3600)} h` : `in ${Math.floor(f / 86400)} d`;
      return;
    }
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

// ---- live domain check: <li data-domain-watch data-domain="…" data-site="…" data-status="…">
// While DNS or the certificate is pending, the card re-checks every few seconds (DNS is
// asked again by those allowed to, else the stored state is read), for at most 10 minutes.
const DOMAIN_BADGES = {
  pending_dns: ["…", "Waiting for DNS", "busy"], validating: ["◐", "Validating", "busy"],
  issuing: ["◐", "Issuing certificate", "busy"], active: ["✓", "Active", "ok"],
  renewing: ["↻", "Renewing", "ok"], failed: ["✕", "Failed", "bad"],
};
// A next step as the page says it (views::next_for_people): tool calls become its button.
const forPeople = (next) => next
  .replace(/HOSTING_VALIDATE_DOMAIN( \{[^}]*\})?/g, "“Check now”")
  .replace(/HOSTING_LIST_DOMAINS( \{[^}]*\})?/g, "this page");
function cell(tr, text, cls) {
  const td = document.createElement("td");
  if (cls) td.className = cls;
  td.textContent = text;
  tr.appendChild(td);
  return td;
}
function showDomain(card, d) {
  const [icon, label, tone] = DOMAIN_BADGES[d.status] || ["•", d.status, "idle"];
  const badge = document.createElement("span");
  badge.className = `badge badge-${tone}`;
  badge.dataset.status = d.status;
  const i = document.createElement("span");
  i.className = "badge-icon"; i.setAttribute("aria-hidden", "true"); i.textContent = icon;
  badge.append(i, label);
  card.querySelector("[data-domain-badge]").replaceChildren(badge);
  card.querySelector("[data-domain-next-text]").textContent = forPeople(d.next);
  const cert = card.querySelector("[data-domain-cert]");
  if (d.certificate) cert.textContent = `Certificate expires ${d.certificate.expires_at}`;
  else if (d.certificate_problem) cert.textContent = `Certificate order failed: ${d.certificate_problem.message}`;
  if (d.checked_at) card.querySelector("[data-domain-checked]").textContent = d.checked_at;
  const rows = (d.diagnosis || []).map((c) => {
    const tr = document.createElement("tr");
    tr.dataset.check = `${c.type} ${c.name}`;
    tr.dataset.checkOk = String(c.ok);
    cell(tr, c.type, "mono"); cell(tr, c.name, "mono"); cell(tr, c.expected, "mono");
    const seen = c.observed.length ? c.observed.join(", ") : "nothing";
    const atSource = c.authoritative
      ? `; name servers: ${c.authoritative.observed.length ? c.authoritative.observed.join(", ") : "nothing"}`
      : "";
    cell(tr, seen + atSource, "mono");
    const result = cell(tr, "");
    const mark = document.createElement("span");
    mark.className = c.ok ? "ok-mark" : "bad-mark";
    mark.textContent = c.ok ? "✓ ok" : `✕ ${c.next}`;
    result.appendChild(mark);
    return tr;
  });
  card.querySelector("[data-diagnosis]").replaceChildren(...rows);
  card.dataset.status = d.status;
}
function watchDomain(card) {
  const pending = ["pending_dns", "validating", "issuing"];
  const site = encodeURIComponent(card.dataset.site);
  const name = card.dataset.domain;
  const live = card.querySelector("[data-domain-live]");
  const until = Date.now() + 10 * 60 * 1000;
  let ask = card.dataset.canCheck === "true";
  const tick = async () => {
    if (Date.now() > until) { live.textContent = "Stopped checking after 10 minutes; use “Check now”."; return; }
    try {
      let r;
      if (ask && card.dataset.status === "pending_dns") {
        r = await fetch(`/api/sites/${site}/domains/${encodeURIComponent(name)}/validate`, {
          method: "POST", credentials: "same-origin",
          headers: { "content-type": "application/json", "x-csrf-token": csrf() }, body: "{}",
        });
        if (r.status === 403) { ask = false; setTimeout(tick, 0); return; }
      } else {
        r = await fetch(`/api/sites/${site}/domains?limit=200`, { credentials: "same-origin" });
      }
      if (!r.ok) throw new Error(String(r.status));
      const body = await r.json();
      const d = body.domains ? body.domains.find((x) => x.name === name) : body;
      if (!d) { live.textContent = "This domain was removed."; return; }
      showDomain(card, d);
      live.textContent = pending.includes(d.status) ? "Checking every few seconds…" : "";
    } catch (_) {
      live.textContent = "Could not check just now; trying again…";
    }
    if (pending.includes(card.dataset.status)) setTimeout(tick, 3000);
  };
  if (pending.includes(card.dataset.status)) {
    live.textContent = "Checking every few seconds…";
    setTimeout(tick, 1500);
  }
}
document.querySelectorAll("[data-domain-watch]").forEach(watchDomain);

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
