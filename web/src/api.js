// The officers' protocol over the client API (docs/openapi.yaml), as gateway/client/api.py
// speaks it: enrollment, sign-in, the verified directory, sealing, opening, read
// acknowledgements and the live stream. Every check on what the gateway says is made here,
// against the gateway key pinned at enrollment.
import * as c from "./crypto.js";
import { checkLog, openMembership } from "./ledger.js";

const ENVELOPE_TYPE = "application/vnd.fpg.envelope";
const DESCRIPTOR_PATH = "/.well-known/fpg/descriptor";
const DAY_MS = 86_400_000;
const MAX_INBOX_PAGES = 50;
export const MAX_ATTACHMENT_BYTES = 5 * 1024 * 1024; // base64 in an envelope of at most 8 MiB

export class ApiError extends Error {
  constructor(status, code, message) {
    super(`${message} (${code}, HTTP ${status})`);
    this.status = status;
    this.code = code;
  }
}

async function raiseFor(response) {
  if (response.ok) return;
  let code = "http_error";
  let message = response.statusText || "error";
  try {
    const doc = await response.json();
    code = String(doc.error);
    message = String(doc.message);
  } catch { /* not JSON */ }
  throw new ApiError(response.status, code, message);
}

function gatewaySigningKey(descriptorText) {
  const doc = c.peekSignedJson(descriptorText, "fpg descriptor v1");
  const entry = (doc.keys || []).find((k) => k.role === c.ROLE_GATEWAY_SIGNING);
  if (!entry) throw new c.CryptoFailure("malformed", "the descriptor names no signing key");
  return { gateway: doc.gateway, key: c.fromB64(entry.key) };
}

// The home gateway's id and key from its descriptor, checked against the fingerprint its
// operator read out, and the descriptor's own signature.
export async function fetchGatewayKey(fingerprint) {
  const response = await fetch(DESCRIPTOR_PATH, { credentials: "omit" });
  await raiseFor(response);
  const note = await response.text();
  const { gateway, key } = gatewaySigningKey(note);
  if (!c.fingerprintsEqual(fingerprint, c.fingerprint(c.ROLE_GATEWAY_SIGNING, key))) {
    throw new c.CryptoFailure("fingerprint", "the gateway's key has another fingerprint");
  }
  c.openSignedJson(note, "fpg descriptor v1", gateway, [key]);
  return { gateway, key };
}

// Enroll: new keys made here, the enrollment proof signed with them, and the gateway's
// binding checked to name exactly these keys. Returns {record, keys}.
export async function enroll(code, fingerprint) {
  const normalized = code.trim().toUpperCase();
  if (!c.ENROLL_CODE.test(normalized)) throw new c.CryptoFailure("enrollment_code_invalid", "bad code");
  const { gateway, key } = await fetchGatewayKey(fingerprint);
  const keys = c.OfficerKeys.generate();
  const signB64 = c.b64(keys.signPublic);
  const encB64 = c.b64(keys.encPublic);
  const proof = keys.sign(c.enrollText(gateway, normalized, signB64, encB64));
  const response = await fetch("/v1/enroll", {
    method: "POST", credentials: "omit", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ code: normalized, sign_key: signB64, enc_key: encB64, signature: c.b64(proof) }),
  });
  await raiseFor(response);
  const doc = await response.json();
  if (doc.gateway_key !== c.b64(key)) {
    throw new c.CryptoFailure("fingerprint", "the gateway answered with another key");
  }
  const binding = c.openSignedJson(doc.binding, "fpg officer binding v1", gateway, [key]);
  if (binding.gateway !== gateway || binding.sign_key !== signB64 || binding.enc_key !== encB64
      || binding.officer !== doc.officer) {
    throw new c.CryptoFailure("bad_binding", "the gateway's binding does not name our keys");
  }
  const record = {
    v: 1, officer: doc.officer, gateway, gateway_key: c.b64(key), desks: binding.desks,
    sign_key: signB64, enc_key: encB64, partners: {},
  };
  return { record, keys };
}

export const associatedData = (record) => c.canonicalJson({
  enc_key: record.enc_key, gateway: record.gateway, officer: record.officer, sign_key: record.sign_key,
});

// --- the admission chain (PROTOCOL.md 7.6) ---------------------------------------------
// Before sealing for a desk, each member it lists must be proven: its admission verifies
// over its keys as listed, made before its binding ended, by a member of the desk (or of
// its supervisor desk) itself proven so, or by the operator (the desk's gateway key) while
// the desk had no other member. A gateway cannot add a reader without forging a signature.
const OPERATOR = "operator";
const MAX_CHAIN = 64;

function chainView(directory) {
  const officers = new Map();
  for (const f of directory.former.values()) {
    officers.set(f.officer, { officer: f.officer, signKey: f.sign_key, encKey: f.enc_key || "",
      ended: Math.min(f.not_after, f.revoked ?? 2 ** 62), admissions: new Map(Object.entries(f.admissions || {})) });
  }
  const admissions = new Map();
  for (const desk of directory.desks.values()) {
    for (const m of desk.members) {
      if (m.admission) {
        if (!admissions.has(m.officer)) admissions.set(m.officer, new Map());
        admissions.get(m.officer).set(desk.address, m.admission);
      }
    }
  }
  for (const desk of directory.desks.values()) {
    for (const m of desk.members) {
      officers.set(m.officer, { officer: m.officer, signKey: m.sign_key, encKey: m.enc_key,
        ended: m.not_after, admissions: admissions.get(m.officer) ?? new Map() });
    }
  }
  const supervisors = new Map([...directory.desks.values()].map((d) => [d.address, d.supervisor]));
  return { officers, supervisors };
}

function unproven(message) {
  return new c.CryptoFailure("unproven_member", message);
}

function signedBy(keyB64, text, admission) {
  try {
    return c.verifyDetached(c.fromB64(admission.signature), text, typeof keyB64 === "string" ? c.fromB64(keyB64) : keyB64);
  } catch {
    return false;
  }
}

export function checkMembers(directory, desk, operatorKey) {
  const { officers, supervisors } = chainView(directory);
  const proven = new Set();
  const prove = (officer, address, trail) => {
    const key = `${officer}\n${address}`;
    if (proven.has(key)) return;
    if (trail.includes(key) || trail.length > MAX_CHAIN) throw unproven(`the admissions of ${officer} go round in a circle`);
    const member = officers.get(officer);
    const admission = member?.admissions.get(address);
    if (!member || !admission || typeof admission.at !== "number" || typeof admission.by !== "string") {
      throw unproven(`${officer} is listed on ${address} without an admission`);
    }
    const text = c.admissionText(address, officer, member.signKey, member.encKey, admission.by, admission.at);
    if (admission.at >= member.ended) throw unproven(`${officer} was admitted after its binding ended`);
    if (admission.by === OPERATOR) {
      if (!signedBy(operatorKey, text, admission)) throw unproven(`the admission of ${officer} is not signed by the operator`);
      for (const other of officers.values()) {
        const earlier = other.admissions.get(address);
        if (other.officer !== officer && earlier && earlier.at <= admission.at && admission.at < other.ended) {
          throw unproven(`${officer} was admitted by the operator while ${other.officer} was a member`);
        }
      }
    } else {
      const admitter = officers.get(admission.by);
      if (!admitter) throw unproven(`${officer} was admitted by ${admission.by}, whom the directory does not list`);
      if (!signedBy(admitter.signKey, text, admission)) throw unproven(`the admission of ${officer} is not signed by ${admission.by}`);
      if (!(admission.at < admitter.ended)) throw unproven(`${admission.by} admitted ${officer} after its own binding ended`);
      const via = [address, supervisors.get(address)].find((d) => {
        const held = d ? admitter.admissions.get(d) : undefined;
        return held && held.at <= admission.at;
      });
      if (!via) throw unproven(`${admission.by}, who admitted ${officer}, was not a member of ${address} then`);
      prove(admitter.officer, via, [...trail, key]);
    }
    proven.add(key);
  };
  for (const m of directory.desks.get(desk).members) prove(m.officer, desk, []);
}

export class Session {
  constructor(record, keys, onPin, onLog) {
    this.record = record;
    this.keys = keys;
    this.gatewayKey = c.fromB64(record.gateway_key);
    this.token = null;
    this.pending = [];
    this.directories = new Map();
    this.partnerKeys = new Map();
    this.onPin = onPin; // called when a partner's key is pinned (trust on first use)
    this.onLog = onLog; // called with a gateway's checkpoint, verified, to remember
  }

  get officer() { return this.record.officer; }
  get gateway() { return this.record.gateway; }
  get desks() { return this.record.desks; }
  address(desk) { return desk.includes("@") ? desk : `${desk}@${this.gateway}`; }

  async signIn() {
    let response = await fetch("/v1/session/challenge", {
      method: "POST", credentials: "omit", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ officer: this.officer }),
    });
    await raiseFor(response);
    const challenge = c.fromB64((await response.json()).challenge);
    const signature = this.keys.sign(c.sessionText(this.gateway, this.officer, challenge));
    response = await fetch("/v1/session", {
      method: "POST", credentials: "omit", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ officer: this.officer, challenge: c.b64(challenge), signature: c.b64(signature) }),
    });
    await raiseFor(response);
    const answer = await response.json();
    this.token = answer.token;
    this.pending = Array.isArray(answer.pending) ? answer.pending : [];
  }

  // An authenticated request; signs in again once when the session has ended.
  async request(method, path, { json, body, headers = {} } = {}) {
    for (const attempt of [0, 1]) {
      if (this.token === null) await this.signIn();
      const init = { method, credentials: "omit", headers: { ...headers, Authorization: `Bearer ${this.token}` } };
      if (json !== undefined) {
        init.body = JSON.stringify(json);
        init.headers["Content-Type"] = "application/json";
      } else if (body !== undefined) {
        init.body = body;
      }
      const response = await fetch(path, init);
      if (response.status === 401 && attempt === 0) {
        this.token = null;
        continue;
      }
      await raiseFor(response);
      return response;
    }
    throw new Error("unreachable");
  }

  async getJson(path) {
    return (await this.request("GET", path)).json();
  }

  // --- directories ---------------------------------------------------------------------

  // A partner's signing key, from its descriptor as the home gateway relays it: pinned the
  // first time (trust on first use, like gateway-client), the same key required after.
  async partnerKey(gateway, refresh = false) {
    if (!refresh && this.partnerKeys.has(gateway)) return this.partnerKeys.get(gateway);
    const note = await (await this.request("GET", `${DESCRIPTOR_PATH}?gateway=${encodeURIComponent(gateway)}`)).text();
    const { gateway: named, key } = gatewaySigningKey(note);
    if (named !== gateway) throw new c.CryptoFailure("partner_key", "descriptor of another gateway");
    c.openSignedJson(note, "fpg descriptor v1", gateway, [key]);
    const seen = c.fingerprint(c.ROLE_GATEWAY_SIGNING, key);
    const pinned = this.record.partners?.[gateway];
    if (pinned && !c.fingerprintsEqual(pinned, seen)) {
      throw new c.CryptoFailure("partner_key", `the key shown for ${gateway} is not the one pinned`);
    }
    if (!pinned) await this.onPin?.(gateway, seen);
    this.partnerKeys.set(gateway, key);
    return key;
  }

  // The desk directory of `gateway` (default: home), signed by the home gateway's pinned
  // key (and, for a partner, by the partner's own key too).
  async directory(gateway = this.gateway, refresh = false) {
    if (!refresh && this.directories.has(gateway)) return this.directories.get(gateway);
    const home = gateway === this.gateway;
    const response = await this.request("GET", home ? "/v1/directory" : `/v1/directory?gateway=${encodeURIComponent(gateway)}`);
    const note = await response.text();
    const doc = c.openSignedJson(note, "fpg directory v1", this.gateway, [this.gatewayKey]);
    if (doc.gateway !== gateway) throw new c.CryptoFailure("malformed", "directory names another gateway");
    if (!home) c.verifyNote(note, gateway, [await this.partnerKey(gateway, refresh)]);
    const desks = new Map(doc.desks.map((d) => [d.desk, { address: d.desk, members: d.officers, supervisor: d.supervisor ?? null }]));
    const former = new Map((doc.former || []).map((f) => [f.sign_key_id, f]));
    const verified = { gateway, desks, former };
    this.directories.set(gateway, verified);
    return verified;
  }

  signer(directory, keyId) {
    let found = null;
    const desks = new Set();
    for (const desk of directory.desks.values()) {
      for (const m of desk.members) {
        if (m.sign_key_id === keyId) {
          found = { officer: m.officer, key: c.fromB64(m.sign_key) };
          desks.add(desk.address);
        }
      }
    }
    if (found) return { ...found, desks, former: null };
    const f = directory.former.get(keyId);
    return f ? { officer: f.officer, key: c.fromB64(f.sign_key), desks: new Set(f.desks), former: f } : null;
  }

  // --- reading -------------------------------------------------------------------------

  async inbox(desk) {
    const items = [];
    let after = 0;
    for (let page = 0; page < MAX_INBOX_PAGES; page += 1) {
      const answer = await this.getJson(`/v1/desks/${encodeURIComponent(desk)}/inbox?after=${after}`);
      items.push(...answer.messages);
      if (answer.next === null) break;
      after = answer.next;
    }
    return items;
  }

  // Fetch, verify against the directory and open a message. Never throws for a message
  // that fails its checks: answers {verified: false, reason} and no content.
  async open(messageId) {
    const data = new Uint8Array(await (await this.request("GET", `/v1/messages/${messageId}`)).arrayBuffer());
    let peeked;
    try {
      peeked = c.peekEnvelope(data);
    } catch (err) {
      return { id: messageId, verified: false, reason: err.code || "malformed" };
    }
    const gateway = String(peeked.header.from).split("@")[1];
    let signer = null;
    try {
      signer = this.signer(await this.directory(gateway), peeked.signer)
        ?? this.signer(await this.directory(gateway, true), peeked.signer);
    } catch (err) {
      return { id: messageId, header: peeked.header, verified: false, reason: err.code || "directory" };
    }
    if (!signer) return { id: messageId, header: peeked.header, verified: false, reason: "unknown_sender" };
    let envelope;
    try {
      envelope = await c.verifyEnvelope(data, signer.key);
      if (!signer.desks.has(envelope.header.from)) {
        throw new c.CryptoFailure("unknown_sender", "the signer is not an officer of the sending desk");
      }
      if (!envelope.header.recipients.includes(this.keys.encKeyId)) {
        // Verified, but sealed for others only (a message this desk sent): no content.
        return { id: messageId, header: envelope.header, envelope, payload: null,
          signer: signer.officer, former: signer.former !== null, verified: true };
      }
      const payload = JSON.parse(c.text(c.openEnvelope(envelope, this.keys)));
      if (!payload || payload.type !== envelope.header.kind) {
        throw new c.CryptoFailure("bad_payload", "the payload does not match the kind");
      }
      return { id: messageId, header: envelope.header, envelope, payload, signer: signer.officer,
        former: signer.former !== null, verified: true };
    } catch (err) {
      return { id: messageId, header: peeked.header, signer: signer.officer, verified: false,
        reason: err.code || "malformed" };
    }
  }

  async acknowledge(message) {
    const read = Date.now();
    const signature = this.keys.sign(c.readText(message.id, message.envelope.digest, read));
    return (await this.request("POST", `/v1/messages/${message.id}/read`,
      { json: { read, signature: c.b64(signature) } })).json();
  }

  status(messageId) {
    return this.getJson(`/v1/messages/${messageId}/status`);
  }

  members(desk) {
    return this.getJson(`/v1/desks/${encodeURIComponent(desk)}/members`);
  }

  // Admit a waiting officer once the code it reads out matches the one its keys, as the
  // gateway shows them, give here; nothing is sent otherwise.
  async admit(desk, waiting, typedCode) {
    const expected = c.safetyCode(desk, waiting.officer, waiting.sign_key, waiting.enc_key);
    if (!c.safetyCodesEqual(typedCode, expected)) {
      throw new c.CryptoFailure("safety_code_mismatch", "the safety code does not match");
    }
    const at = Date.now();
    const text = c.admissionText(desk, waiting.officer, waiting.sign_key, waiting.enc_key, this.officer, at);
    return (await this.request("POST", `/v1/desks/${encodeURIComponent(desk)}/admissions`,
      { json: { officer: waiting.officer, at, signature: c.b64(this.keys.sign(text)) } })).json();
  }

  notices(desk) {
    return this.getJson(`/v1/desks/${encodeURIComponent(desk)}/notices?after=0`);
  }

  markNoticesRead(desk, cursors) {
    return this.request("POST", `/v1/desks/${encodeURIComponent(desk)}/notices/read`, { json: { cursors } });
  }

  // --- sending -------------------------------------------------------------------------

  async send(kind, to, doc, { priority = "routine", from, inReplyTo = null, thread = null, lifetimeDays = 7 } = {}) {
    const address = this.address(to);
    const sender = from ?? (this.desks.length === 1 ? this.desks[0] : null);
    if (!sender || !this.desks.includes(sender)) throw new c.CryptoFailure("choose_desk", "choose the desk you send from");
    const id = c.newMessageId();
    const now = Date.now();
    const header = { id, kind, priority, from: sender, to: address, created: now,
      expires: now + lifetimeDays * DAY_MS, thread: thread ?? id, in_reply_to: inReplyTo };
    const payload = c.bytes(c.canonicalJson(doc));
    const gateway = address.split("@")[1];
    for (const refresh of [false, true]) {
      const desk = (await this.directory(gateway, refresh)).desks.get(address);
      if (!desk) throw new c.CryptoFailure("unknown_desk", `no desk ${address}`);
      if (!desk.members.length) throw new c.CryptoFailure("empty_desk", `desk ${address} has no officer yet`);
      const operatorKey = gateway === this.gateway ? this.gatewayKey : await this.partnerKey(gateway);
      checkMembers(await this.directory(gateway), address, operatorKey);
      await this.checkLedger(address, desk, operatorKey);
      const data = c.sealEnvelope(header, payload, this.keys, desk.members.map((m) => c.fromB64(m.enc_key)));
      try {
        return await (await this.request("POST", "/v1/messages",
          { body: data, headers: { "Content-Type": ENVELOPE_TYPE } })).json();
      } catch (err) {
        if (err.code === "recipients_mismatch" && !refresh) continue;
        throw err;
      }
    }
    throw new Error("unreachable");
  }

  // The desk's members proven by its gateway's ledger, which extends the checkpoint this
  // browser remembers of it (PROTOCOL.md 7.8); the new checkpoint is remembered.
  async checkLedger(address, desk, key) {
    const gateway = address.split("@")[1];
    const known = this.record.ledgers?.[gateway] ?? null;
    const answer = await this.getJson(`/v1/desks/${encodeURIComponent(address)}/proofs`
      + (known ? `?known=${known.size}` : ""));
    const seen = openMembership(answer, desk, key);
    if (checkLog(answer, known, seen, gateway === this.gateway)) await this.onLog?.(gateway, seen);
  }

  // --- live updates --------------------------------------------------------------------

  // Server-sent events as (kind, data) to `onEvent` until the stream ends or `signal`
  // aborts it. EventSource cannot send a bearer token, so this reads the stream by fetch.
  async stream(onEvent, signal, since = null) {
    const query = since === null ? "" : `?since=${since}`;
    const response = await this.request("GET", `/v1/stream${query}`, { headers: { Accept: "text/event-stream" } });
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    signal?.addEventListener("abort", () => reader.cancel());
    let buffer = "";
    let kind = null;
    let data = [];
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let cut;
      while ((cut = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 1);
        if (line === ": connected") onEvent("connected", {});
        else if (line.startsWith("event: ")) kind = line.slice(7);
        else if (line.startsWith("data: ")) data.push(line.slice(6));
        else if (line === "" && kind !== null) {
          onEvent(kind, data.length ? JSON.parse(data.join("\n")) : {});
          kind = null;
          data = [];
        }
      }
    }
  }
}
