// Membership a gateway cannot show differently to different officers (PROTOCOL.md 6 and
// 7.8), as gateway/protocol/merkle.py, checkpoint.py and membership.py check it: a desk's
// members must each have their `admitted` entry proven by inclusion in the gateway's
// signed checkpoint, and that checkpoint must extend the one this browser saw before.
import * as c from "./crypto.js";

const MAX_PROOF = 64;
const EMPTY_ROOT_HEX = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

export const leafHash = (entry) => c.sha256(c.concat(Uint8Array.of(0), entry));
const nodeHash = (left, right) => c.sha256(c.concat(Uint8Array.of(1), left, right));
// Tree positions stay below 2^53: halve with Math, not bit operators (32-bit in JS).
const half = (n) => Math.floor(n / 2);
const odd = (n) => n % 2 === 1;

function proofFailure(code, message) {
  return new c.CryptoFailure(code, message);
}

// RFC 9162 2.1.3.2: `leaf` is leaf `index` of the tree of `size` whose root is `root`.
export function verifyInclusion(leaf, index, size, proof, root) {
  if (!(Number.isSafeInteger(index) && Number.isSafeInteger(size) && index >= 0 && index < size)) {
    throw proofFailure("proof", `leaf ${index} is not in a tree of size ${size}`);
  }
  let fn = index;
  let sn = size - 1;
  let r = leaf;
  for (const p of proof) {
    if (sn === 0) throw proofFailure("proof", "inclusion proof is too long");
    if (odd(fn) || fn === sn) {
      r = nodeHash(p, r);
      while (!odd(fn) && fn !== 0) {
        fn = half(fn);
        sn = half(sn);
      }
    } else {
      r = nodeHash(r, p);
    }
    fn = half(fn);
    sn = half(sn);
  }
  if (sn !== 0) throw proofFailure("proof", "inclusion proof is too short");
  if (!c.equalBytes(r, root)) throw proofFailure("proof", "inclusion proof does not match the root");
}

// RFC 9162 2.1.4.2 with the trivial cases: the tree of `newSize` extends that of `oldSize`.
export function verifyConsistency(oldSize, newSize, oldRoot, newRoot, proof) {
  if (!(Number.isSafeInteger(oldSize) && Number.isSafeInteger(newSize) && oldSize >= 0)) {
    throw proofFailure("proof", "bad tree sizes");
  }
  if (oldSize > newSize) throw proofFailure("proof", `the tree went back from ${oldSize} to ${newSize}`);
  if (oldSize === newSize) {
    if (proof.length || !c.equalBytes(oldRoot, newRoot)) throw proofFailure("proof", "two roots for one size");
    return;
  }
  if (oldSize === 0) {
    if (proof.length || c.hex(oldRoot) !== EMPTY_ROOT_HEX) throw proofFailure("proof", "bad proof from the empty tree");
    return;
  }
  const path = [...proof];
  if (Number.isInteger(Math.log2(oldSize))) path.unshift(oldRoot);
  if (!path.length) throw proofFailure("proof", "consistency proof is empty");
  let fn = oldSize - 1;
  let sn = newSize - 1;
  while (odd(fn)) {
    fn = half(fn);
    sn = half(sn);
  }
  let fr = path[0];
  let sr = path[0];
  for (const h of path.slice(1)) {
    if (sn === 0) throw proofFailure("proof", "consistency proof is too long");
    if (odd(fn) || fn === sn) {
      fr = nodeHash(h, fr);
      sr = nodeHash(h, sr);
      while (!odd(fn) && fn !== 0) {
        fn = half(fn);
        sn = half(sn);
      }
    } else {
      sr = nodeHash(sr, h);
    }
    fn = half(fn);
    sn = half(sn);
  }
  if (sn !== 0) throw proofFailure("proof", "consistency proof is too short");
  if (!c.equalBytes(fr, oldRoot) || !c.equalBytes(sr, newRoot)) {
    throw proofFailure("proof", "consistency proof does not match the roots");
  }
}

// A checkpoint note (origin, size, base64 root), signed under its origin by `key`.
export function openCheckpoint(note, key, code = "unproven_member") {
  if (typeof note !== "string") throw proofFailure(code, "no checkpoint");
  const origin = note.split("\n")[0];
  let body;
  try {
    body = c.verifyNote(note, origin, [key]);
  } catch (err) {
    throw proofFailure(code, `the checkpoint is not the gateway's (${err.message})`);
  }
  const lines = body.split("\n");
  if (lines.length < 4 || lines[3] !== "" || !/^(0|[1-9][0-9]{0,15})$/.test(lines[1])) {
    throw proofFailure(code, "a malformed checkpoint");
  }
  const root = c.fromB64(lines[2]);
  if (root.length !== 32) throw proofFailure(code, "a checkpoint root is a SHA-256 hash");
  return { origin, size: Number(lines[1]), root: lines[2] };
}

function hashes(value) {
  if (!Array.isArray(value) || value.length > MAX_PROOF) throw proofFailure("proof", "a proof is a list of hashes");
  return value.map((h) => {
    const raw = c.fromB64(h);
    if (raw.length !== 32) throw proofFailure("proof", "a proof hash is 32 bytes");
    return raw;
  });
}

// Every member of `desk` (a verified directory entry) has its admission in the ledger.
export function openMembership(answer, desk, key) {
  if (!answer || typeof answer !== "object") throw proofFailure("unproven_member", "malformed proofs");
  const checkpoint = openCheckpoint(answer.checkpoint, key);
  const root = c.fromB64(checkpoint.root);
  const entries = new Map((Array.isArray(answer.members) ? answer.members : [])
    .filter((m) => m && typeof m === "object").map((m) => [m.officer, m]));
  for (const member of desk.members) {
    const proof = entries.get(member.officer);
    const refuse = (why) => proofFailure("unproven_member",
      `${member.officer} is listed on ${desk.address} but the ledger does not prove it (${why})`);
    if (!proof || !Number.isSafeInteger(proof.seq) || typeof proof.entry !== "string") throw refuse("no entry");
    const a = member.admission || {};
    const expected = c.hex(c.sha256(c.admissionText(desk.address, member.officer, member.sign_key,
      member.enc_key, a.by, a.at)));
    let doc;
    try {
      doc = JSON.parse(proof.entry);
    } catch {
      throw refuse("a malformed entry");
    }
    if (!doc || doc.type !== "admitted" || doc.digest !== expected) throw refuse("its entry is not this admission");
    try {
      verifyInclusion(leafHash(c.bytes(proof.entry)), proof.seq, checkpoint.size, hashes(proof.proof), root);
    } catch (err) {
      throw refuse(err.message);
    }
  }
  return checkpoint;
}

// `later` extends `earlier` (both {origin, size, root}); ledger_fork otherwise.
export function checkExtends(earlier, later, proof) {
  const fork = (why) => proofFailure("ledger_fork",
    `the gateway's ledger does not extend the one this browser saw (${earlier.size} entries): ${why}`);
  if (later.origin !== earlier.origin) throw fork("its origin changed");
  try {
    verifyConsistency(earlier.size, later.size, c.fromB64(earlier.root), c.fromB64(later.root), proof);
  } catch (err) {
    throw fork(err.message);
  }
}

// The home gateway answers from the size asked; a partner's answer is relayed and may
// start elsewhere while the partner is down. Whether to remember `seen`.
export function checkLog(answer, known, seen, home) {
  if (!known) return true;
  if (known.size === seen.size) {
    checkExtends(known, seen, []);
    return true;
  }
  if (answer.known !== known.size) {
    if (home) throw proofFailure("ledger_fork", "the consistency proof is from another size");
    return false;
  }
  let proof;
  try {
    proof = hashes(answer.consistency);
  } catch (err) {
    throw proofFailure("ledger_fork", err.message);
  }
  checkExtends(known, seen, proof);
  return true;
}
