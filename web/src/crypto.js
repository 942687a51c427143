// The protocol's cryptography in the browser, byte for byte what gateway/crypto/ and
// gateway/protocol/ do in Python (docs/PROTOCOL.md sections 2-4 and 7): key ids, signed
// notes, envelopes, enrollment and sign-in texts, read acknowledgements, and the
// passphrase wrap of the officer's keys. Every primitive comes from libsodium.
import sodium from "libsodium-wrappers-sumo";

export const ROLE_GATEWAY_SIGNING = "gateway-signing";
export const ROLE_OFFICER_SIGNING = "officer-signing";
export const ROLE_OFFICER_ENCRYPTION = "officer-encryption";
const MAGIC = [0x46, 0x50, 0x47, 0x45]; // "FPGE"
const VERSION = 1;
const KEY_ID_SIZE = 8;
const WRAP_SIZE = 80;
const NONCE_SIZE = 24;
const SIGNATURE_SIZE = 64;
const TAG_SIZE = 16;
const MAX_HEADER_SIZE = 4096;
const MAX_RECIPIENTS = 64;
const PREFIX_SIZE = 4 + 1 + KEY_ID_SIZE + 2;
const DASH = "\u2014";
const ID = /^[0-9a-f]{32}$/;
const NAME = "[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?";
const ADDRESS = new RegExp(`^${NAME}@${NAME}$`);
const KINDS = ["hotline", "case", "reply", "status", "forward", "handover"];
// Optional header fields (docs/PROTOCOL.md 3.2): left out when unset, never null.
const OPTIONAL_FIELDS = ["due", "forwards", "handling", "permit", "state"];
export const HANDLING_CODES = ["H0", "H1", "H2", "H3"];
const CASE_STATES = ["received", "returned_incomplete", "resubmitted", "in_progress", "executed",
  "partly_executed", "refused", "withdrawn"];
const DAY = /^[0-9]{4}-[0-9]{2}-[0-9]{2}$/;
const PERMIT = /^[A-Za-z0-9+/]{86}==$/;
const PRIORITIES = ["flash", "immediate", "priority", "routine"];
const HEADER_FIELDS = ["created", "expires", "from", "id", "in_reply_to", "kind", "priority",
  "recipients", "thread", "to", "v"];
const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder("utf-8", { fatal: true });

export class CryptoFailure extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

export async function ready() {
  await sodium.ready;
}

export const bytes = (text) => utf8.encode(text);
export const text = (data) => fromUtf8.decode(data);
export const hex = (data) => sodium.to_hex(data);
export const fromHex = (value) => sodium.from_hex(value);
export const b64 = (data) => sodium.to_base64(data, sodium.base64_variants.ORIGINAL);
export function fromB64(value) {
  if (typeof value !== "string" || !/^[A-Za-z0-9+/]*={0,2}$/.test(value) || value.length % 4) {
    throw new CryptoFailure("malformed", "not valid base64");
  }
  return sodium.from_base64(value, sodium.base64_variants.ORIGINAL);
}
export const sha256 = (data) => sodium.crypto_hash_sha256(data);
export const randomBytes = (n) => sodium.randombytes_buf(n);

export function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

export function equalBytes(a, b) {
  return a.length === b.length && sodium.memcmp(a, b);
}

// --- key ids and fingerprints (PROTOCOL.md 2) ------------------------------------------

function keyDigest(role, publicKey) {
  return sha256(concat(bytes(`fpg-key/v1\n${role}\n`), publicKey));
}

export function keyId(role, publicKey) {
  return hex(keyDigest(role, publicKey).subarray(0, KEY_ID_SIZE));
}

const BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
function base32(data) {
  let out = "";
  let bits = 0;
  let value = 0;
  for (const byte of data) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += BASE32[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += BASE32[(value << (5 - bits)) & 31];
  return out;
}

export function fingerprint(role, publicKey) {
  const compact = base32(keyDigest(role, publicKey).subarray(0, 20));
  return compact.match(/.{4}/g).join(" ");
}

export function normalizeFingerprint(typed) {
  const compact = String(typed).toUpperCase().replace(/[ \t-]/g, "");
  if (!/^[A-Z2-7]{32}$/.test(compact)) {
    throw new CryptoFailure("fingerprint", "a fingerprint is 32 base32 characters (A-Z, 2-7)");
  }
  return compact.match(/.{4}/g).join(" ");
}

export function fingerprintsEqual(a, b) {
  return equalBytes(bytes(normalizeFingerprint(a)), bytes(normalizeFingerprint(b)));
}

// --- officer keys ------------------------------------------------------------------------

export class OfficerKeys {
  // seeds: {signing: 32 bytes, encryption: 32 bytes}. Held in memory only while unlocked.
  constructor(signingSeed, encryptionSecret) {
    const pair = sodium.crypto_sign_seed_keypair(signingSeed);
    this.signingSeed = signingSeed;
    this.signPrivate = pair.privateKey;
    this.signPublic = pair.publicKey;
    this.encSecret = encryptionSecret;
    this.encPublic = sodium.crypto_scalarmult_base(encryptionSecret);
    this.signKeyId = keyId(ROLE_OFFICER_SIGNING, this.signPublic);
    this.encKeyId = keyId(ROLE_OFFICER_ENCRYPTION, this.encPublic);
  }

  static generate() {
    return new OfficerKeys(randomBytes(32), randomBytes(32));
  }

  sign(message) {
    return sodium.crypto_sign_detached(message, this.signPrivate);
  }

  unwrap(wrap) {
    try {
      return sodium.crypto_box_seal_open(wrap, this.encPublic, this.encSecret);
    } catch {
      throw new CryptoFailure("decryption", "wrapped content key does not open");
    }
  }

  wipe() {
    for (const secret of [this.signingSeed, this.signPrivate, this.encSecret]) {
      sodium.memzero(secret);
    }
  }
}

export function verifyDetached(signature, message, publicKey) {
  if (signature.length !== SIGNATURE_SIZE || publicKey.length !== 32) return false;
  try {
    return sodium.crypto_sign_verify_detached(signature, message, publicKey);
  } catch {
    return false;
  }
}

// --- the texts officers sign (PROTOCOL.md 7.3-7.6) ---------------------------------------

export function enrollText(gateway, code, signKeyB64, encKeyB64) {
  const normalized = code.trim().toUpperCase();
  return bytes(`fpg enroll v1\n${gateway}\n${normalized}\n${signKeyB64}\n${encKeyB64}\n`);
}

export function sessionText(gateway, officer, challenge) {
  return bytes(`fpg session v1\n${gateway}\n${officer}\n${b64(challenge)}\n`);
}

export function readText(messageId, digestHex, readMs) {
  return bytes(`fpg read v1\n${messageId}\n${digestHex}\n${readMs}\n`);
}

export function safetyCode(desk, officer, signKeyB64, encKeyB64) {
  const digest = sha256(bytes(`fpg safety v1\n${desk}\n${officer}\n${signKeyB64}\n${encKeyB64}\n`));
  let value = 0n;
  for (const byte of digest.subarray(0, 12)) value = (value << 8n) | BigInt(byte);
  const digits = (value % 10n ** 20n).toString().padStart(20, "0");
  return digits.match(/.{4}/g).join(" ");
}

// Compare a code as a person typed it (spaces, dashes) with the one computed, in
// constant time.
export function safetyCodesEqual(typed, expected) {
  const compact = (code) => bytes(String(code).replace(/[ \t-]/g, ""));
  return equalBytes(compact(typed), compact(expected));
}

export function admissionText(desk, officer, signKeyB64, encKeyB64, by, atMs) {
  return bytes(`fpg admission v1\n${desk}\n${officer}\n${signKeyB64}\n${encKeyB64}\n${by}\n${atMs}\n`);
}

export const ENROLL_CODE = /^FPG(-[A-Z2-7]{4}){5}$/;

// --- signed notes (PROTOCOL.md 4) --------------------------------------------------------

function noteKeyId(name, publicKey) {
  return sha256(concat(bytes(`${name}\n`), Uint8Array.of(1), publicKey)).subarray(0, 4);
}

// The verified text of a signed note, if a signature under `name` by one of `keys` (raw
// Ed25519 public keys) verifies; a known key whose signature fails refuses the note.
export function verifyNote(note, name, keys) {
  const whole = typeof note === "string" ? note : text(note);
  if (!whole.endsWith("\n")) throw new CryptoFailure("malformed", "note does not end with a newline");
  const cut = whole.lastIndexOf("\n\n");
  if (cut < 0) throw new CryptoFailure("malformed", "note has no signature block");
  const body = whole.slice(0, cut + 1);
  const message = bytes(body);
  let verified = 0;
  for (const line of whole.slice(cut + 2).split("\n").slice(0, -1)) {
    const parts = line.split(" ");
    if (parts.length !== 3 || parts[0] !== DASH) {
      throw new CryptoFailure("malformed", "malformed note signature line");
    }
    if (parts[1] !== name) continue;
    const raw = fromB64(parts[2]);
    for (const key of keys) {
      if (!equalBytes(raw.subarray(0, 4), noteKeyId(name, key))) continue;
      if (!verifyDetached(raw.subarray(4), message, key)) {
        throw new CryptoFailure("bad_signature", `signature by ${name} does not verify`);
      }
      verified += 1;
    }
  }
  if (!verified) throw new CryptoFailure("bad_signature", `note carries no signature by ${name}`);
  return body;
}

// A signed JSON note (first line, then one line of JSON): its document, once verified.
export function openSignedJson(note, firstLine, name, keys) {
  const body = verifyNote(note, name, keys);
  const lines = body.split("\n");
  if (lines.length !== 3 || lines[0] !== firstLine || lines[2] !== "") {
    throw new CryptoFailure("malformed", `not a ${firstLine} note`);
  }
  return JSON.parse(lines[1]);
}

// The JSON document of a signed JSON note, NOT verified (to learn which key must sign it).
export function peekSignedJson(note, firstLine) {
  const whole = typeof note === "string" ? note : text(note);
  const lines = whole.slice(0, whole.lastIndexOf("\n\n") + 1).split("\n");
  if (lines[0] !== firstLine) throw new CryptoFailure("malformed", `not a ${firstLine} note`);
  return JSON.parse(lines[1]);
}

// --- envelopes (PROTOCOL.md 3) -----------------------------------------------------------

export function canonicalJson(value) {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const keys = Object.keys(value).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(value[k])}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

export function newMessageId() {
  return hex(randomBytes(16));
}

function isCalendarDay(text) {
  if (!DAY.test(text)) return false;
  const [y, m, d] = text.split("-").map(Number);
  const date = new Date(Date.UTC(y, m - 1, d));
  return date.getUTCFullYear() === y && date.getUTCMonth() === m - 1 && date.getUTCDate() === d;
}

function checkOptional(h) {
  for (const name of OPTIONAL_FIELDS) {
    if (name in h && (h[name] === null || typeof h[name] !== "string")) {
      throw new CryptoFailure("malformed", `${name} is left out when not set`);
    }
  }
  const bad = (h.handling !== undefined && !HANDLING_CODES.includes(h.handling))
    || (h.state !== undefined && (h.kind !== "status" || !CASE_STATES.includes(h.state)))
    || (h.due !== undefined && (!(h.kind === "case" || h.state === "resubmitted")
                                || !isCalendarDay(h.due)))
    || ((h.forwards !== undefined) !== (h.kind === "forward"))
    || (h.forwards !== undefined && !ID.test(h.forwards))
    || (h.permit !== undefined && (h.kind !== "forward" || !PERMIT.test(h.permit)))
    || (h.kind === "forward" && h.in_reply_to !== null);
  if (bad) throw new CryptoFailure("malformed", "an optional header field breaks its rules");
}

function checkHeader(h) {
  const keys = Object.keys(h).sort();
  const required = keys.filter((k) => !OPTIONAL_FIELDS.includes(k));
  if (required.join(",") !== HEADER_FIELDS.join(",")) {
    throw new CryptoFailure("malformed", "header fields");
  }
  checkOptional(h);
  if (h.v !== 1 || !ID.test(h.id) || !ID.test(h.thread) || !KINDS.includes(h.kind)
      || !PRIORITIES.includes(h.priority) || !ADDRESS.test(h.from) || !ADDRESS.test(h.to)
      || !Number.isSafeInteger(h.created) || !Number.isSafeInteger(h.expires)
      || !(0 <= h.created && h.created < h.expires)
      || !(h.in_reply_to === null || ID.test(h.in_reply_to))
      || !Array.isArray(h.recipients) || h.recipients.length > MAX_RECIPIENTS
      || h.recipients.some((k) => !/^[0-9a-f]{16}$/.test(k))) {
    throw new CryptoFailure("malformed", "header is not valid");
  }
  if (h.in_reply_to === null && (["reply", "status", "handover"].includes(h.kind)
                                 || h.thread !== h.id)) {
    throw new CryptoFailure("malformed", "a reply names the message it answers");
  }
  return h;
}

function wrapFor(contentKey, recipientPublic, ephemeralSeed) {
  if (ephemeralSeed === undefined) return sodium.crypto_box_seal(contentKey, recipientPublic);
  const eph = sodium.crypto_box_seed_keypair(ephemeralSeed);
  const nonce = sodium.crypto_generichash(NONCE_SIZE, concat(eph.publicKey, recipientPublic));
  return concat(eph.publicKey, sodium.crypto_box_easy(contentKey, nonce, recipientPublic, eph.privateKey));
}

const u16 = (n) => Uint8Array.of((n >> 8) & 255, n & 255);
const u32 = (n) => Uint8Array.of((n >>> 24) & 255, (n >>> 16) & 255, (n >>> 8) & 255, n & 255);

// Seal `payload` (bytes) for every key of `recipients` (raw X25519 public keys) and sign it
// with `keys` (OfficerKeys). `fixed` ({contentKey, nonce, ephemeralSeeds}) is for the
// test vectors only.
export function sealEnvelope(header, payload, keys, recipients, fixed = {}) {
  if (!recipients.length || recipients.length > MAX_RECIPIENTS) {
    throw new CryptoFailure("malformed", "an envelope has 1 to 64 recipients");
  }
  const h = { ...header, recipients: recipients.map((k) => keyId(ROLE_OFFICER_ENCRYPTION, k)), v: 1 };
  const headerBytes = bytes(canonicalJson(checkHeader(h)));
  if (headerBytes.length > MAX_HEADER_SIZE) throw new CryptoFailure("malformed", "header too large");
  const contentKey = fixed.contentKey ?? randomBytes(32);
  const nonce = fixed.nonce ?? randomBytes(NONCE_SIZE);
  const ciphertext = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
    payload, headerBytes, null, nonce, contentKey);
  const wraps = recipients.map((k, i) => wrapFor(contentKey, k, fixed.ephemeralSeeds?.[i]));
  const body = concat(Uint8Array.from(MAGIC), Uint8Array.of(VERSION), fromHex(keys.signKeyId),
    u16(headerBytes.length), headerBytes, u16(recipients.length), ...wraps, nonce,
    u32(ciphertext.length), ciphertext);
  if (!fixed.contentKey) sodium.memzero(contentKey);
  return concat(body, keys.sign(body));
}

function prefix(data) {
  if (data.length < PREFIX_SIZE + 2 + 2 + WRAP_SIZE + NONCE_SIZE + 4 + TAG_SIZE + SIGNATURE_SIZE) {
    throw new CryptoFailure("malformed", "too short to be an envelope");
  }
  if (!MAGIC.every((b, i) => data[i] === b) || data[4] !== VERSION) {
    throw new CryptoFailure("malformed", "not an envelope of version 1");
  }
  return { signer: hex(data.subarray(5, 13)), headerLength: (data[13] << 8) | data[14] };
}

// The signer's key id and the header, NOT verified: only to learn whose key verifies it.
export function peekEnvelope(data) {
  const { signer, headerLength } = prefix(data);
  if (headerLength < 2 || headerLength > MAX_HEADER_SIZE || PREFIX_SIZE + headerLength > data.length) {
    throw new CryptoFailure("malformed", "bad header length");
  }
  return { signer, header: JSON.parse(text(data.subarray(PREFIX_SIZE, PREFIX_SIZE + headerLength))) };
}

// Verify the envelope's signature with `signPublic` (raw Ed25519 key), then parse it.
export async function verifyEnvelope(data, signPublic) {
  const { signer, headerLength } = prefix(data);
  if (signer !== keyId(ROLE_OFFICER_SIGNING, signPublic)) {
    throw new CryptoFailure("signer_mismatch", "envelope is signed by a different key");
  }
  const signedLength = data.length - SIGNATURE_SIZE;
  const body = data.subarray(0, signedLength);
  if (!verifyDetached(data.subarray(signedLength), body, signPublic)) {
    throw new CryptoFailure("bad_signature", "the signature does not verify");
  }
  let at = PREFIX_SIZE;
  const headerBytes = body.subarray(at, at + headerLength);
  at += headerLength;
  const count = (body[at] << 8) | body[at + 1];
  at += 2;
  if (count < 1 || count > MAX_RECIPIENTS || at + count * WRAP_SIZE + NONCE_SIZE + 4 > signedLength) {
    throw new CryptoFailure("malformed", "bad recipient count");
  }
  const wraps = [];
  for (let i = 0; i < count; i += 1) wraps.push(body.subarray(at + i * WRAP_SIZE, at + (i + 1) * WRAP_SIZE));
  at += count * WRAP_SIZE;
  const nonce = body.subarray(at, at + NONCE_SIZE);
  at += NONCE_SIZE;
  const ctLength = ((body[at] << 24) >>> 0) + (body[at + 1] << 16) + (body[at + 2] << 8) + body[at + 3];
  at += 4;
  if (ctLength < TAG_SIZE || at + ctLength !== signedLength) {
    throw new CryptoFailure("malformed", "ciphertext length does not match the envelope size");
  }
  const header = checkHeader(JSON.parse(text(headerBytes)));
  if (header.recipients.length !== count) throw new CryptoFailure("malformed", "recipients differ");
  return { raw: data, header, headerBytes, signer, wraps, nonce,
    ciphertext: body.subarray(at), digest: hex(sha256(data)) };
}

// Unwrap the content key with `keys` and decrypt; the payload bytes.
export function openEnvelope(envelope, keys) {
  const index = envelope.header.recipients.indexOf(keys.encKeyId);
  if (index < 0) throw new CryptoFailure("not_a_recipient", "this key is not among the recipients");
  const contentKey = keys.unwrap(envelope.wraps[index]);
  try {
    return sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
      null, envelope.ciphertext, envelope.headerBytes, envelope.nonce, contentKey);
  } catch {
    throw new CryptoFailure("decryption", "ciphertext does not authenticate");
  } finally {
    sodium.memzero(contentKey);
  }
}

// --- the officer's keys at rest (browser key store) --------------------------------------
// Argon2id (libsodium's INTERACTIVE cost: 64 MiB, 2 passes) derives a key from the
// passphrase; XChaCha20-Poly1305 seals the seeds, with the record's public part as
// associated data so that a swapped public half does not open.

export const KDF = { alg: "argon2id13", opslimit: 2, memlimit: 64 * 1024 * 1024 };

function derive(passphrase, salt, kdf) {
  return sodium.crypto_pwhash(32, bytes(passphrase), salt, kdf.opslimit, kdf.memlimit,
    sodium.crypto_pwhash_ALG_ARGON2ID13);
}

export function lockKeys(keys, passphrase, associated, kdf = KDF) {
  if (!passphrase) throw new CryptoFailure("passphrase", "an empty passphrase is not allowed");
  const salt = randomBytes(sodium.crypto_pwhash_SALTBYTES);
  const nonce = randomBytes(NONCE_SIZE);
  const key = derive(passphrase, salt, kdf);
  const plain = concat(keys.signingSeed, keys.encSecret);
  const box = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(plain, bytes(associated), null, nonce, key);
  sodium.memzero(key);
  sodium.memzero(plain);
  return { kdf: { ...kdf, salt: b64(salt) }, nonce: b64(nonce), box: b64(box) };
}

export function unlockKeys(sealed, passphrase, associated) {
  const key = derive(passphrase, fromB64(sealed.kdf.salt), sealed.kdf);
  let plain;
  try {
    plain = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
      null, fromB64(sealed.box), bytes(associated), fromB64(sealed.nonce), key);
  } catch {
    throw new CryptoFailure("wrong_passphrase", "wrong passphrase");
  } finally {
    sodium.memzero(key);
  }
  const keys = new OfficerKeys(plain.slice(0, 32), plain.slice(32, 64));
  sodium.memzero(plain);
  return keys;
}
