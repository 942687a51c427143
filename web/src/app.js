// The officers' web client: views and what each button does. Crypto and protocol live in
// crypto.js and api.js; this module holds the unlocked keys in memory only, locks them
// after IDLE_MS without input, and wipes them at sign-out.
import * as c from "./crypto.js";
import * as ledger from "./ledger.js";
import * as store from "./keystore.js";
import { Session, enroll, associatedData, MAX_ATTACHMENT_BYTES } from "./api.js";
import { LANGUAGES, setLanguage, t, formatTime } from "./i18n.js";

const IDLE_MINUTES = [5, 10, 15, 30, 60]; // the officer's choice, kept with the record
const DEFAULT_IDLE_MINUTES = 10;
const MAX_ATTACHMENTS = 32;
const $ = (id) => document.getElementById(id);
let session = null; // the unlocked keys live here, and nowhere else
let record = null;
let idleTimer = null;
let streamAbort = null;
let currentDesk = null;
let currentMessage = null;
const views = ["view-enroll", "view-unlock", "view-desk"];
const panes = ["pane-inbox", "pane-message", "pane-compose", "pane-notices", "pane-partners", "pane-sent",
  "pane-members", "pane-cases"];
// A request's states (docs/PROTOCOL.md 3.7), as the gateway records them from signed headers.
const CASE_STATES = ["submitted", "received", "returned_incomplete", "resubmitted", "in_progress",
  "executed", "partly_executed", "refused", "withdrawn"];

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) node.append(child);
  return node;
}

function show(id) {
  for (const v of views) $(v).hidden = v !== id;
  const unlocked = id === "view-desk";
  $("lock").hidden = !unlocked;
  $("signout").hidden = !record;
}

function pane(id) {
  for (const p of panes) $(p).hidden = p !== id;
}

function say(key, vars, isError = false) {
  $("status").textContent = key ? t(key, vars) : "";
  $("status").className = isError ? "error" : "";
}

function fail(err) {
  const code = err?.code || "error";
  say("error.generic", { code });
  console.info("fpg", code);
}

// --- lock, idle time, sign-out --------------------------------------------------------

function lock() {
  streamAbort?.abort();
  streamAbort = null;
  session?.keys.wipe();
  session = null;
  clearTimeout(idleTimer);
  $("thread").replaceChildren();
  $("inbox-list").replaceChildren();
  show(record ? "view-unlock" : "view-enroll");
}

function touch() {
  if (!session) return;
  clearTimeout(idleTimer);
  const minutes = IDLE_MINUTES.includes(record?.idle_minutes) ? record.idle_minutes : DEFAULT_IDLE_MINUTES;
  idleTimer = setTimeout(() => {
    lock();
    say("status.locked_idle");
  }, minutes * 60 * 1000);
}

async function signOut() {
  lock();
  await store.forget();
  record = null;
  show("view-enroll");
  say("status.signed_out");
}

// --- enrollment and unlocking ----------------------------------------------------------

async function onEnroll(event) {
  event.preventDefault();
  const form = event.target;
  if (form.passphrase.value !== form.passphrase2.value) {
    say("enroll.mismatch", {}, true);
    return;
  }
  say("status.working");
  try {
    const { record: fresh, keys } = await enroll(form.code.value, form.fingerprint.value);
    fresh.sealed = c.lockKeys(keys, form.passphrase.value, associatedData(fresh));
    await store.save(fresh);
    record = fresh;
    form.reset();
    await start(keys);
    say("enroll.done", { officer: record.officer });
  } catch (err) {
    fail(err);
  }
}

async function onUnlock(event) {
  event.preventDefault();
  say("status.working");
  try {
    const keys = c.unlockKeys(record.sealed, event.target.passphrase.value, associatedData(record));
    event.target.reset();
    await start(keys);
    say("");
  } catch (err) {
    if (err.code === "wrong_passphrase") say("unlock.wrong", {}, true);
    else fail(err);
  }
}

async function pin(gateway, fingerprint) {
  record.partners = { ...(record.partners || {}), [gateway]: fingerprint };
  await store.save(record);
}

async function remember(gateway, checkpoint) {
  record.ledgers = { ...(record.ledgers || {}), [gateway]: checkpoint };
  await store.save(record);
}

async function start(keys) {
  session = new Session(record, keys, pin, remember);
  await session.signIn();
  $("who").textContent = t("app.who", { officer: record.officer, gateway: record.gateway });
  show("view-desk");
  touch();
  renderDesks();
  const admitted = record.desks.filter((d) => !session.pending.includes(d));
  if (session.pending.length) say("enroll.pending", { desks: session.pending.join(", ") });
  if (admitted.length) {
    await openDesk(admitted[0]);
    listen();
  }
}

// --- desks, inbox ----------------------------------------------------------------------

function renderDesks() {
  $("desk-list").replaceChildren(...record.desks.map((desk) => el("li", {},
    el("button", { type: "button", className: "desk", onclick: () => openDesk(desk) },
      el("span", {}, desk), el("span", { className: "count", id: `count-${desk}` })))));
  $("idle").replaceChildren(...IDLE_MINUTES.map((m) => el("option",
    { value: String(m), selected: m === (record.idle_minutes ?? DEFAULT_IDLE_MINUTES) }, t("desk.minutes", { count: m }))));
  $("compose-from").replaceChildren(...record.desks.map((d) => el("option", { value: d }, d)));
  $("safety").replaceChildren(el("h3", { textContent: t("desk.safety") }), ...record.desks.map((desk) =>
    el("p", {}, `${desk}: `, el("code", { className: "safety-code" },
      c.safetyCode(desk, record.officer, record.sign_key, record.enc_key)))));
}

async function openDesk(desk) {
  currentDesk = desk;
  pane("pane-inbox");
  await refreshInbox();
}

async function refreshInbox() {
  if (!session || !currentDesk) return;
  const items = await session.inbox(currentDesk);
  const unread = items.filter((m) => m.first_read === null);
  const read = items.filter((m) => m.first_read !== null);
  const ordered = [...unread.reverse(), ...read.reverse()];
  $("inbox-title").textContent = t("inbox.of", { desk: currentDesk });
  $("inbox-counts").textContent = t("inbox.counts", { unread: unread.length, total: items.length });
  const badge = $(`count-${currentDesk}`);
  if (badge) badge.textContent = unread.length ? String(unread.length) : "";
  $("inbox-list").replaceChildren(...ordered.map((m) => el("li", {
    className: `${m.first_read === null ? "unread" : "read"} prio-${m.priority}`,
  }, el("button", { type: "button", className: "message-row", onclick: () => openMessage(m.id), "data-id": m.id },
    el("span", { className: "prio" }, t(`priority.${m.priority}`)),
    el("span", { className: "kind" }, t(`kind.${m.kind}`)),
    el("span", { className: "from" }, m.from),
    el("time", { dateTime: new Date(m.delivered).toISOString() }, formatTime(m.delivered))))));
}

// --- a message and its thread ------------------------------------------------------------

function renderMessage(m) {
  const box = el("article", { className: `message ${m.verified ? "verified" : "failed"}`, "data-id": m.id });
  const h = m.header || {};
  box.append(el("p", { className: `prio prio-${h.priority}` }, t(`priority.${h.priority ?? "routine"}`)));
  // The handling code first, before the content: what the officer may do with it.
  box.append(el("p", { className: "handling" },
    h.handling ? t(`handling.${h.handling}`) : t("handling.none")));
  box.append(el("p", {}, t("message.from_to", { from: h.from ?? "?", to: h.to ?? "?" })));
  if (h.created) box.append(el("p", {}, el("time", {}, formatTime(h.created))));
  if (m.verified) {
    box.append(el("p", { className: "signature ok" }, t("message.verified", { officer: m.signer })));
    if (m.payload === null) box.append(el("p", { className: "sealed" }, t("message.sealed_for_them")));
    else renderPayload(box, m.payload);
  } else {
    box.append(el("p", { className: "signature bad", role: "alert" }, t("message.failed", { reason: m.reason })));
  }
  box.append(el("p", { className: "reads" }));
  return box;
}

function renderPayload(box, p) {
  if (p.type === "case") {
    const facts = el("dl", { className: "case" });
    const fact = (key, value) => facts.append(el("dt", {}, t(key)), el("dd", {}, String(value ?? "")));
    fact("case.ref", p.case_ref);
    fact("case.basis", t(`basis.${p.legal_basis}`));
    fact("case.offence", p.offence);
    fact("case.actions", (p.requested_actions || []).join("; "));
    fact("case.deadline", p.deadline);
    box.append(facts);
  }
  box.append(el("div", { className: "body" }, typeof p.text === "string" ? p.text : ""));
  const files = Array.isArray(p.attachments) ? p.attachments.slice(0, MAX_ATTACHMENTS) : [];
  if (files.length) {
    box.append(el("ul", { className: "attachments" }, ...files.map((a) => el("li", {},
      el("button", { type: "button", className: "download", onclick: () => download(a) },
        t("message.download", { name: safeName(a.name) }))))));
  }
}

// A file name that cannot name a path or hide its type: no separators, no control or
// reserved characters, no leading dots, at most 120 characters.
function safeName(name) {
  const cleaned = String(name ?? "").normalize("NFC")
    .replace(/[\\/:*?"<>|\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/g, "_")
    .replace(/^[.\s]+/, "").trim().slice(0, 120);
  return cleaned || "attachment";
}

function download(attachment) {
  touch();
  const data = c.fromB64(attachment.data);
  const url = URL.createObjectURL(new Blob([data], { type: "application/octet-stream" }));
  const link = el("a", { href: url, download: safeName(attachment.name) });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

async function openMessage(id) {
  touch();
  pane("pane-message");
  const m = await session.open(id);
  currentMessage = m;
  const thread = [];
  if (m.header?.in_reply_to) thread.push(await session.open(m.header.in_reply_to).catch(() => null));
  thread.push(m);
  shownThread = thread.filter(Boolean);
  $("thread").replaceChildren(...shownThread.map(renderMessage));
  $("reply-form").hidden = !(m.verified && m.payload !== null);
  if (m.verified && m.payload !== null && record.desks.includes(m.header.to)) {
    await session.acknowledge(m);
  }
  for (const shown of shownThread) await showReads(shown);
  await refreshInbox();
}
let shownThread = [];

async function showReads(m) {
  if (!m.verified) return;
  const status = await session.status(m.id);
  const node = document.querySelector(`article[data-id="${m.id}"] .reads`);
  if (node && status.reads.length) {
    node.textContent = t("message.read_by", { officers: status.reads.map((r) => r.officer).join(", ") });
  }
}

async function onReply(event) {
  event.preventDefault();
  touch();
  const m = currentMessage;
  if (!m?.verified) return;
  const frm = record.desks.includes(m.header.to) ? m.header.to : m.header.from;
  const to = frm === m.header.to ? m.header.from : m.header.to;
  try {
    const answer = await session.send("reply", to, { type: "reply", text: event.target.text.value },
      { priority: m.header.priority, from: frm, inReplyTo: m.id, thread: m.header.thread });
    event.target.reset();
    record.sent = [{ id: answer.id, to, at: Date.now() }, ...(record.sent || [])].slice(0, 200);
    await store.save(record);
    $("thread").append(el("article", { className: "message sent", "data-id": answer.id },
      el("p", {}, t("message.reply_sent"))));
    say("message.reply_sent");
  } catch (err) {
    fail(err);
  }
}

// --- compose ---------------------------------------------------------------------------

async function onCompose(event) {
  event.preventDefault();
  touch();
  const form = event.target;
  try {
    const kind = form.kind.value;
    const doc = { type: kind, text: form.text.value };
    if (kind === "case") {
      Object.assign(doc, { case_ref: form.case_ref.value, legal_basis: form.legal_basis.value,
        offence: form.offence.value, deadline: form.deadline.value,
        requested_actions: form.actions.value.split("\n").map((a) => a.trim()).filter(Boolean) });
      const files = [...form.files.files];
      if (files.length > MAX_ATTACHMENTS || files.reduce((n, f) => n + f.size, 0) > MAX_ATTACHMENT_BYTES) {
        say("compose.too_large", {}, true);
        return;
      }
      if (files.length) {
        doc.attachments = await Promise.all(files.map(async (f) => ({ name: f.name,
          media_type: f.type || "application/octet-stream", data: c.b64(new Uint8Array(await f.arrayBuffer())) })));
      }
    } else if (!doc.text.trim()) {
      say("compose.empty", {}, true);
      return;
    }
    const answer = await session.send(kind, form.to.value.trim(), doc,
      { priority: form.priority.value, from: form.from.value });
    form.reset();
    say("compose.sent", { id: answer.id });
    record.sent = [{ id: answer.id, to: form.to.value.trim(), at: Date.now() }, ...(record.sent || [])].slice(0, 200);
    await store.save(record);
  } catch (err) {
    fail(err);
  }
}

async function showSent() {
  touch();
  pane("pane-sent");
  const rows = [];
  for (const item of record.sent || []) {
    const status = await session.status(item.id).catch(() => null);
    const reads = status?.reads.map((r) => r.officer).join(", ");
    rows.push(el("li", { "data-id": item.id }, el("strong", {}, item.to), " ",
      el("time", {}, formatTime(item.at)), " ",
      el("span", { className: "reads" }, reads ? t("message.read_by", { officers: reads }) : t("sent.unread"))));
  }
  $("sent-list").replaceChildren(...rows);
}

// --- requests (case threads) -------------------------------------------------------------

async function showCases() {
  touch();
  pane("pane-cases");
  const overdue = $("cases-overdue").checked;
  const answer = await session.getJson(`/v1/cases?overdue=${overdue ? 1 : 0}&closed=${overdue ? 0 : 1}`);
  $("case-list").replaceChildren(...answer.cases.map((x) => {
    const state = CASE_STATES.includes(x.state) ? t(`state.${x.state}`) : x.state;
    const due = x.due === null ? t("cases.no_due")
      : x.overdue ? t("cases.overdue", { days: -x.days_left, due: x.due })
        : t("cases.days_left", { days: x.days_left, due: x.due });
    const other = x.role === "requester" ? x.executor : x.requester;
    return el("li", { className: x.overdue ? "overdue" : "", "data-id": x.id },
      el("strong", { className: "state" }, state), " ", el("span", { className: "due" }, due), " ",
      el("span", {}, t(`cases.role_${x.role}`, { other })), " ",
      el("button", { type: "button", onclick: () => openMessage(x.id).catch(fail) }, t("cases.open")));
  }));
  $("cases-empty").hidden = answer.cases.length > 0;
}

// --- notices, partners -----------------------------------------------------------------

async function showNotices() {
  touch();
  pane("pane-notices");
  const answer = await session.notices(currentDesk);
  $("notice-list").replaceChildren(...answer.notices.map((n) => el("li", { className: n.read ? "read" : "unread" },
    el("strong", {}, t(`notice.${n.event}`)), " ", el("time", {}, formatTime(n.at)),
    n.officer ? ` ${n.officer}` : "")));
  const cursors = answer.notices.filter((n) => !n.read).map((n) => n.cursor);
  if (cursors.length) await session.markNoticesRead(currentDesk, cursors);
}

async function showMembers() {
  touch();
  pane("pane-members");
  const answer = await session.members(currentDesk);
  $("member-list").replaceChildren(...answer.members.map((m) => el("li", {}, el("strong", {}, m.officer), " ",
    t("members.admitted", { by: m.admitted_by, at: formatTime(m.admitted_at) }))));
  $("pending-list").replaceChildren(...answer.pending.map((waiting, i) => {
    const input = el("input", { id: `code-${i}`, autocomplete: "off", required: true, inputMode: "numeric" });
    const form = el("form", { className: "admit", "data-officer": waiting.officer },
      el("label", { htmlFor: `code-${i}` }, t("members.code_for", { officer: waiting.officer })), input,
      el("button", { type: "submit" }, t("members.admit")));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        await session.admit(currentDesk, waiting, input.value);
        say("members.admitted_now", { officer: waiting.officer });
        await showMembers();
      } catch (err) {
        if (err.code === "safety_code_mismatch") say("members.mismatch", {}, true);
        else fail(err);
      }
    });
    return el("li", {}, form);
  }));
}

async function onPartners(event) {
  event.preventDefault();
  touch();
  try {
    const dir = await session.directory(event.target.gateway.value.trim(), true);
    $("partner-list").replaceChildren(...[...dir.desks.values()].map((d) => el("li", {},
      el("strong", {}, d.address), " ", t("partners.members", { count: d.members.length }))));
    $("known-desks").replaceChildren(...[...dir.desks.keys()].map((a) => el("option", { value: a })));
  } catch (err) {
    fail(err);
  }
}

// --- live updates ------------------------------------------------------------------------

function listen() {
  streamAbort?.abort();
  const abort = new AbortController();
  streamAbort = abort;
  session.stream(async (kind, data) => {
    if (kind === "message" || kind === "reply") {
      await refreshInbox();
      say("status.new_message");
    } else if (kind === "read") {
      for (const shown of shownThread) if (shown.id === data.id) await showReads(shown);
      if (!$("pane-sent").hidden) await showSent();
      say("status.read", { officer: data.officer });
    } else if (["membership", "breach", "escalation", "expired", "rejected"].includes(kind)) {
      say("status.notice", { event: t(`notice.${kind}`) });
    }
  }, abort.signal).catch(() => {}).finally(() => {
    if (streamAbort === abort && session) setTimeout(listen, 2000);
  });
}

// --- start -----------------------------------------------------------------------------

async function main() {
  await c.ready();
  const saved = null;
  await setLanguage(saved || (navigator.language || "en").slice(0, 2));
  $("language").replaceChildren(...Object.entries(LANGUAGES).map(([code, name]) =>
    el("option", { value: code, selected: code === document.documentElement.lang }, name)));
  $("language").setAttribute("aria-label", t("app.language"));
  $("language").addEventListener("change", async (e) => {
    await setLanguage(e.target.value);
    if (session) {
      renderDesks();
      await refreshInbox();
    }
  });
  $("enroll-form").addEventListener("submit", onEnroll);
  $("unlock-form").addEventListener("submit", onUnlock);
  $("reply-form").addEventListener("submit", onReply);
  $("compose-form").addEventListener("submit", onCompose);
  $("partners-form").addEventListener("submit", onPartners);
  $("lock").addEventListener("click", lock);
  $("idle").addEventListener("change", async (e) => {
    record.idle_minutes = Number(e.target.value);
    await store.save(record);
    touch();
  });
  $("signout").addEventListener("click", signOut);
  $("back-inbox").addEventListener("click", () => openDesk(currentDesk));
  $("show-compose").addEventListener("click", () => { touch(); pane("pane-compose"); });
  $("compose-kind").addEventListener("change", (e) => {
    const isCase = e.target.value === "case";
    $("case-fields").hidden = !isCase;
    for (const id of ["case-ref", "case-offence", "case-actions", "case-deadline"]) $(id).required = isCase;
  });
  $("show-notices").addEventListener("click", () => showNotices().catch(fail));
  $("show-partners").addEventListener("click", () => { touch(); pane("pane-partners"); });
  $("show-sent").addEventListener("click", () => showSent().catch(fail));
  $("show-members").addEventListener("click", () => showMembers().catch(fail));
  $("show-cases").addEventListener("click", () => showCases().catch(fail));
  $("cases-overdue").addEventListener("change", () => showCases().catch(fail));
  for (const kind of ["keydown", "pointerdown"]) document.addEventListener(kind, touch, { passive: true });
  record = await store.load() ?? null;
  show(record ? "view-unlock" : "view-enroll");
  document.body.dataset.ready = "1";
}

globalThis.fpgCrypto = { ...c, ledger }; // pure functions only (no keys): the browser tests check vectors with them
main().catch(fail);
